"""Mixed precision per device: bf16 where the GPU has it, fp16 with a scaler otherwise,
fp32 on CPU."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from hbseg.errors import ConfigError

__all__ = ["AmpSettings", "resolve_amp"]


@dataclass(frozen=True)
class AmpSettings:
    mode: str  # what was asked: auto, bf16, fp16, off
    dtype: torch.dtype | None  # autocast dtype; None runs in fp32
    device_type: str  # "cuda" or "cpu"

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[self.dtype]

    @property
    def use_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        # a disabled scaler still has a state_dict, so checkpoints look the same either way
        return torch.amp.GradScaler(self.device_type, enabled=self.use_scaler)


def resolve_amp(mode: str, device: str | torch.device) -> AmpSettings:
    device_type = torch.device(device).type
    if mode == "off":
        return AmpSettings(mode, None, device_type)
    if device_type != "cuda":
        if mode == "auto":
            return AmpSettings(mode, None, device_type)
        raise ConfigError(f"--amp {mode} needs a CUDA device; on {device_type} use --amp off")
    bf16_ok = torch.cuda.is_bf16_supported()
    if mode == "auto":
        return AmpSettings(mode, torch.bfloat16 if bf16_ok else torch.float16, device_type)
    if mode == "bf16":
        if not bf16_ok:
            raise ConfigError("this GPU has no bf16 support; use --amp fp16 (or auto)")
        return AmpSettings(mode, torch.bfloat16, device_type)
    if mode == "fp16":
        return AmpSettings(mode, torch.float16, device_type)
    raise ConfigError(f"unknown amp mode {mode!r}. Valid: auto, bf16, fp16, off")
