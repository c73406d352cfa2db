"""Distributed data parallel under ``torchrun``: one process per device, rank 0 writes.

``torchrun --nproc_per_node=K`` sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous
address); ``init_distributed`` reads them and joins the group: gloo on CPU, nccl on
CUDA. Each rank reads its own shard of the data (``LoaderConfig(shard_id=rank,
num_shards=world)``, the DALI reader's sharding, equivalent to a DistributedSampler).

Uneven shards: shard sizes differ by at most one sample, so per-rank batch counts differ
by at most one. Every rank runs the *same* number of training steps, ``min`` over ranks
(computed locally from the shard arithmetic, no communication): a rank with one more
batch skips it. DDP's gradient all-reduce then never waits on a rank that has stopped,
and per-step collectives (the NaN check) stay in lockstep. At most one batch per rank is
skipped per epoch, and the skipped samples change every epoch with the shuffle.
Validation runs on the unwrapped model with no collectives per step, so every
validation image is scored exactly once; only the Dice sums are all-reduced.
"""

from __future__ import annotations

import datetime
import os
import pickle
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "all_reduce_sum", "barrier",
           "gather_objects", "broadcast_object"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"  # this rank's device, e.g. "cuda:1"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistInfo:
    """Join the process group if torchrun started us; otherwise a single-process DistInfo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    is_cuda = device.startswith("cuda")
    if is_cuda:
        index = local if world > 1 or device == "cuda" else torch.device(device).index or 0
        torch.cuda.set_device(index)
        device = f"cuda:{index}"
    if world <= 1:
        return DistInfo(0, 1, 0, device)
    if not dist.is_initialized():
        backend = "nccl" if is_cuda else "gloo"
        kwargs = {"device_id": torch.device(device)} if is_cuda else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), **kwargs)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, device)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if _active():
        dist.all_reduce(t)
    return t


def any_true(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any (e.g. a Ctrl-C seen by one rank)."""
    if not _active():
        return bool(flag)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # nccl reduces device tensors only
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=device)).item() > 0)


def barrier() -> None:
    if _active():
        dist.barrier()


def gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` without torch.distributed)."""
    if not _active():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank. An exception object travels like any other,
    so a failure on rank 0 can be re-raised everywhere instead of hanging the others."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def is_picklable(obj) -> bool:
    try:
        pickle.dumps(obj)
        return True
    except Exception:  # noqa: BLE001
        return False
