"""Self-describing checkpoints, written atomically.

A checkpoint is a dict: ``format`` ("hbseg-checkpoint"), ``version``, ``card`` (a
ModelCard as a dict), ``state_dict`` (model weights), and whatever training state the
caller adds (optimizer, scheduler, scaler, epoch, rng, metrics, config).
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from hbseg.atomic import atomic_path
from hbseg.errors import CheckpointError

from .card import ModelCard
from .registry import create_model

__all__ = ["CHECKPOINT_FORMAT", "save_checkpoint", "read_checkpoint", "load_model"]

CHECKPOINT_FORMAT = "hbseg-checkpoint"
CHECKPOINT_VERSION = 1


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def save_checkpoint(path: str | Path, model: torch.nn.Module, card: ModelCard, **state) -> None:
    """Write ``path`` via a temporary file and a rename: a kill never leaves half a file."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "card": card.to_dict(),
        "state_dict": _unwrap(model).state_dict(),
        **state,
    }
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
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - truncated zips raise many different types
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"unreadable or truncated checkpoint ({first[:160]})", path) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError("not an hbseg checkpoint (no 'format: hbseg-checkpoint' key)", path)
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint version {ckpt.get('version')} is not supported", path)
    return ckpt


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
