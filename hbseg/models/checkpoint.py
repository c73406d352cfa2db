"""Self-describing checkpoints, written atomically, read without running code.

A checkpoint is a dict: ``format`` ("hbseg-checkpoint"), ``version``, ``card`` (a
ModelCard as a dict), ``state_dict`` (model weights), whatever training state the caller
adds (optimizer, scheduler, scaler, epoch, rng, metrics, config), and ``sha256``, a hash
of all of that. Everything in it is a plain type (dict, list, tuple, str, int, float,
bool, None) or a tensor, so ``torch.load(weights_only=True)`` reads it: a file that asks
for any other Python object is refused instead of unpickled, since unpickling an object
can run any code the file's author chose. The hash is checked on every load, because
torch's zip reader does not check its CRCs and a damaged file would otherwise load.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from hbseg.atomic import atomic_path
from hbseg.errors import CheckpointError

from .card import ModelCard
from .registry import create_model

__all__ = ["CHECKPOINT_FORMAT", "save_checkpoint", "read_checkpoint", "load_model"]

CHECKPOINT_FORMAT = "hbseg-checkpoint"
CHECKPOINT_VERSION = 2  # 2: plain types only, and the sha256 content hash
# version 1 files have no hash, and their RNG state holds numpy's uint32 key array: these
# numpy names rebuild that array and nothing else (the second spelling is numpy 1's)
_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's array rebuilder, wherever this numpy keeps it
_V1_NUMPY = [_RECONSTRUCT, np.ndarray, np.dtype, type(np.dtype(np.uint32)),
             (_RECONSTRUCT, "numpy.core.multiarray._reconstruct")]
_UNSAFE = re.compile(r"GLOBAL (\S+) was not an allowed global|unsupported GLOBAL (\S+)")


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def _feed(h, obj) -> None:
    """Hash ``obj`` by value; a type tag and length before each item keep ['ab'] and
    ['a', 'b'] (or 1 and 1.0, or a list and a tuple) apart."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        h.update(f"T{t.dtype}{tuple(t.shape)}{t.stride()}".encode())
        if t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last):
            # read in memory order: copying channels-last conv weights took most of the time
            t = t.as_strided((t.numel(),), (1,))
        else:
            t = t.contiguous().reshape(-1)
        h.update(t.view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__[0]}{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    elif obj is None or type(obj) in (bool, int, float, str):
        h.update(f"{type(obj).__name__}{obj!r}".encode() + b"\0")
    else:
        # torch.load(weights_only=True) would refuse the file; better to fail while saving
        raise TypeError(f"a checkpoint holds plain types and tensors only, not {type(obj).__name__}")


def content_hash(ckpt: dict) -> str:
    """sha256 of everything in a checkpoint but its own ``sha256`` entry."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in ckpt.items() if k != "sha256"})
    return h.hexdigest()


def save_checkpoint(path: str | Path, model: torch.nn.Module, card: ModelCard, **state) -> None:
    """Write ``path`` via a temporary file and a rename: a kill never leaves half a file."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "card": card.to_dict(),
        "state_dict": _unwrap(model).state_dict(),
        **state,
    }
    payload["sha256"] = content_hash(payload)
    # serialise in memory first: torch's zip writer reports a full disk as an opaque
    # RuntimeError, a plain file write as OSError(ENOSPC), which atomic_path explains
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(buffer.getbuffer())


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load and check a checkpoint dict, with clear errors for truncated or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", path)
    try:
        with torch.serialization.safe_globals(_V1_NUMPY), warnings.catch_warnings():
            # a bare pickle of protocol 4 is refused below; the warning would be a second line
            warnings.filterwarnings("ignore", "Detected pickle protocol")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = _UNSAFE.search(str(e))
        if unsafe:
            what = next(g for g in unsafe.groups() if g).strip()
            raise CheckpointError(
                f"refused: the file asks to load the Python object {what}, which no hbseg "
                "checkpoint holds; unpickling it could run code from the file, so it was not "
                "opened (get the checkpoint again from a source you trust)", path) from None
        raise CheckpointError(f"unreadable or truncated checkpoint ({_torch_reason(e)})", path) from None
    except Exception as e:  # noqa: BLE001 - truncated zips raise many different types
        raise CheckpointError(f"unreadable or truncated checkpoint ({_torch_reason(e)})", path) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError("not an hbseg checkpoint (no 'format: hbseg-checkpoint' key)", path)
    version = ckpt.get("version")
    if version not in (1, CHECKPOINT_VERSION):
        raise CheckpointError(f"checkpoint version {version} is not supported", path)
    if version != 1:
        stored = ckpt.get("sha256")
        try:
            actual = content_hash(ckpt)
        except TypeError:
            actual = None  # an object weights_only let through but hbseg never saves
        if actual is None or stored != actual:
            raise CheckpointError(
                "damaged checkpoint: its content does not match the sha256 hash stored in it "
                "(damaged in a copy or on disk, or edited); use another copy", path)
    return ckpt


def _torch_reason(e: Exception) -> str:
    """The line of torch's message that says what is wrong, without its advice to load
    with weights_only=False (which would run code from the file)."""
    for line in str(e).splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line and not line.startswith(("Weights only load failed", "Please file an issue",
                                         "Check the documentation", "Re-running")):
            return line.split(". ")[0][:160]
    return type(e).__name__


def load_model(
    path: str | Path, device: str | torch.device = "cpu", ckpt: dict | None = None
) -> tuple[torch.nn.Module, ModelCard]:
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
    ckpt = ckpt if ckpt is not None else read_checkpoint(path)
    card = ModelCard.from_dict(ckpt["card"])
    model = create_model(card.arch, card.encoder, card.in_channels, card.classes, **card.model_kwargs)
    state = ckpt["state_dict"]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or reshaped:
        example = (missing or unexpected or reshaped)[0]
        raise CheckpointError(
            f"weights do not fit a {card.arch}/{card.encoder} model ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(reshaped)} mis-shaped tensors, e.g. {example!r}); "
            "the checkpoint's card and its weights come from different models", path)
    model.load_state_dict(state)
    return model.to(device).eval(), card
