"""The fast step (hbseg.train.fast): compiled training follows eager training, a compiled run
resumes, and the command lines take the compile modes."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_main

from hbseg.train.fast import COMPILE_MODES, compile_model, make_optimizer


class _Batches:
    """The loader protocol over fixed batches; each ``iter()`` yields the next one."""

    def __init__(self, batches):
        self.batches, self.k = batches, 0
        self.batch_size = batches[0][0].shape[0]
        self.num_samples = self.batch_size * len(batches)
        self.device = "cpu"

    def __len__(self) -> int:
        return 1

    def set_epoch(self, epoch: int) -> None:
        pass

    def reset(self) -> None:
        pass

    def __iter__(self):
        batch = self.batches[self.k % len(self.batches)]
        self.k += 1
        return iter([batch])


def _tiny_model():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.SiLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.BatchNorm2d(8), torch.nn.SiLU(),
        torch.nn.Conv2d(8, 3, 1))


def _losses(mode: str, steps: int = 20) -> list[float]:
    from hbseg.train.amp import resolve_amp
    from hbseg.train.loop import StepSettings, train_one_epoch
    from hbseg.train.losses import get_loss

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(2, 1, 16, 16, generator=g),
                (torch.rand(2, 3, 16, 16, generator=g) > 0.5).to(torch.uint8)) for _ in range(4)]
    raw = _tiny_model()
    opt = make_optimizer(raw.parameters(), 1e-2, 1e-4, "cpu")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    amp = resolve_amp("off", "cpu")
    settings = StepSettings(amp, grad_clip=1.0, channels_last=False, log_every=1, progress=False)
    model, loader = compile_model(raw, mode), _Batches(batches)
    return [train_one_epoch(model, loader, get_loss("bce_dice"), opt, sched, amp.grad_scaler(),
                            settings, torch.device("cpu"), steps=1)["loss"] for _ in range(steps)]


def test_compiled_training_follows_the_eager_loss_curve():
    # inductor on CPU, as on a GPU: fused kernels reorder float sums, nothing more
    eager, compiled = _losses("off"), _losses("default")
    worst = max(abs(a - b) / abs(a) for a, b in zip(eager, compiled, strict=True))
    assert worst < 1e-3, f"compiled vs eager loss over 20 steps: max relative gap {worst:.2e}"
    assert compiled[-1] < compiled[0], "the compiled model did not learn"


def test_modes_are_checked():
    with pytest.raises(ValueError, match="compile mode"):
        compile_model(_tiny_model(), "fastest")
    assert COMPILE_MODES[0] == "off" and compile_model(m := _tiny_model(), "off") is m


def test_compiled_run_resumes(tiny_root, tmp_path, monkeypatch):
    from hbseg.train.cli import main

    # dynamo's graph capture and AOT autograd without inductor's code generation: the
    # compiled paths (wrapped module, state_dict keys, resume) at a CPU test's cost
    monkeypatch.setenv("HBSEG_COMPILE_BACKEND", "aot_eager")
    run = tmp_path / "run"
    args = ["--data", tiny_root, "--loader", "dali", "--device", "cpu", "--encoder", "resnet18",
            "--size", 32, "--batch-size", 2, "--epochs", 2, "--stop-after", 1, "--compile",
            "--no-progress", "--workers", 1, "--out", run]
    assert run_main(main, args, monkeypatch) == 0
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["compile"] is True and saved["compile_mode"] == "default"
    assert run_main(main, ["--resume", run, "--no-progress"], monkeypatch) == 0
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_bench_config_takes_a_compile_mode():
    from hbseg.benchmarks.config import BenchConfig
    from hbseg.errors import ConfigError

    assert BenchConfig(data="d", compile="reduce-overhead").to_dict()["compile"] == "reduce-overhead"
    with pytest.raises(ConfigError, match="--compile"):
        BenchConfig(data="d", compile="turbo")
