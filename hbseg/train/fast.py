"""The fast training step's two choices, shared by ``hbseg-train`` and ``hbseg-bench loaders``
so that the benchmark's bound is the step a user gets: how the model is compiled, and the
optimizer.

``torch.compile`` modes (``COMPILE_MODES``):

- ``off``: eager.
- ``default``: inductor fuses the memory-bound chains (depthwise convolutions, batch norms,
  SiLU, squeeze-excite) that dominate an EfficientNet step.
- ``max-autotune-no-cudagraphs``: also benchmarks kernel choices; slower to compile.
- ``reduce-overhead``: CUDA graphs on top of ``default``; needs fixed shapes, which training
  has (one size, one batch size; a short last batch is captured once more).

The backend is inductor; ``HBSEG_COMPILE_BACKEND`` (e.g. ``aot_eager``) swaps it, which tests
use to exercise the compiled paths without inductor's minutes of code generation on a CPU.
"""

from __future__ import annotations

import os

__all__ = ["COMPILE_MODES", "compile_model", "make_optimizer", "check_compile_mode"]

COMPILE_MODES = ("off", "default", "max-autotune-no-cudagraphs", "reduce-overhead")


def check_compile_mode(mode: str) -> str:
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}; got {mode!r}")
    return mode


def compile_model(model, mode: str):
    """``model`` compiled as ``mode`` says (``off``: unchanged). Compilation itself happens
    at the first call, so the first step carries its cost."""
    import torch

    if check_compile_mode(mode) == "off":
        return model
    backend = os.environ.get("HBSEG_COMPILE_BACKEND", "inductor")
    return torch.compile(model, mode=None if mode == "default" else mode, backend=backend)


def make_optimizer(params, lr: float, weight_decay: float, device):
    """AdamW; on CUDA the fused implementation (one kernel for every parameter, no host
    synchronisation), elsewhere the default ``foreach`` one."""
    import torch

    fused = torch.device(device).type == "cuda"
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
