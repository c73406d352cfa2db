"""The frozen settings of one ``hbseg-bench loaders`` run, saved into ``results.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from hbseg.errors import ConfigError

__all__ = ["BenchConfig", "AMP_MODES"]

AMP_MODES = ("auto", "bf16", "fp16", "off")


SCHEMA = "hbseg.bench.loaders/1"  # results.json of hbseg-bench loaders


@dataclass(frozen=True)
class BenchConfig:
    """Every knob of the loader benchmark; ``None`` means "use the default".

    loaders: back-end names, measured in this order (``baseline`` first makes its ratio
        column readable).
    cpus: core counts to restrict each measurement to; ``None`` inside the tuple means
        "every core this process may use".
    workers: DataLoader workers for ``torch``/``baseline`` (capped at the run's cores);
        ``None`` uses one per core. DALI back-ends always get ``num_threads`` = cores.
    epochs: timed epochs per phase (loader-only, then training); medians are reported.
    warmup_epochs: untimed loader-only epochs before the timed ones.
    warmup_steps: untimed training steps (cudnn autotune, allocator) before timed epochs.
    steps_limit: cap on batches per epoch, for quick runs; ``None`` reads whole epochs.
    bound_batches: real batches kept resident on the device for the no-loading bound.
    timeout_s: wall-clock limit of one (loader, cpus) measurement subprocess.
    loader_steps: ``(loader, K)`` pairs: that loader's epochs capped at K batches instead of
        ``steps_limit`` (a slow ``baseline`` measured on fewer batches so that it fits).
    loader_timeouts: ``(loader, seconds)`` pairs replacing ``timeout_s`` for that loader
        (``bound`` included): each run's limit sized from what it needs.
    bound: measure the no-loading bound first (off when an earlier part, to be merged, has it).
    compile: ``hbseg.train.fast.COMPILE_MODES`` name for the model of the bound and every
        loader alike (``hbseg-train --compile``'s step); its cost falls in the first warm-up
        step, reported apart as ``startup.first_step_s``.
    """

    data: str
    loaders: tuple[str, ...] = ("baseline", "torch", "dali", "dali-cache")
    size: int = 1024
    arch: str = "unet"
    encoder: str = "efficientnet-b2"
    batch_size: int = 8
    workers: int | None = None
    cpus: tuple[int | None, ...] = (None,)
    epochs: int = 3
    warmup_epochs: int = 1
    warmup_steps: int = 3
    steps_limit: int | None = None
    amp: str = "auto"
    device: str = "cpu"
    seed: int = 0
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "bce_dice"
    channels_last: bool = True
    bound_batches: int = 4
    timeout_s: float = 3600.0
    loader_steps: tuple[tuple[str, int], ...] = ()
    loader_timeouts: tuple[tuple[str, float], ...] = ()
    bound: bool = True
    compile: str = "off"

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ConfigError(msg)

        if not self.loaders and not self.bound:
            bad("no loader to measure")
        if self.size < 16:
            bad(f"--size must be at least 16, got {self.size}")
        for name in ("batch_size", "epochs", "bound_batches"):
            if getattr(self, name) < 1:
                bad(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_epochs", "warmup_steps"):
            if getattr(self, name) < 0:
                bad(f"{name} must not be negative, got {getattr(self, name)}")
        if self.workers is not None and self.workers < 0:
            bad(f"--workers must not be negative, got {self.workers}")
        if self.steps_limit is not None and self.steps_limit < 1:
            bad(f"--steps-limit must be at least 1, got {self.steps_limit}")
        if not self.cpus:
            bad("--cpus needs at least one value")
        for n in self.cpus:
            if n is not None and n < 1:
                bad(f"--cpus values must be at least 1, got {n}")
        if self.amp not in AMP_MODES:
            bad(f"unknown amp mode {self.amp!r}. Valid: {', '.join(AMP_MODES)}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            bad(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cpu" and self.amp in ("bf16", "fp16"):
            bad(f"--amp {self.amp} needs --device cuda; on CPU use --amp off (or auto)")
        if self.timeout_s <= 0:
            bad(f"timeout must be positive, got {self.timeout_s}")
        for name, k in self.loader_steps:
            if k < 1:
                bad(f"--loader-steps {name}={k}: at least 1 batch")
        from hbseg.train.fast import COMPILE_MODES

        if self.compile not in COMPILE_MODES:
            bad(f"--compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        for name, t in self.loader_timeouts:
            if t <= 0:
                bad(f"--run-timeout {name}={t}: must be positive")

    def steps_for(self, kind: str) -> int | None:
        """Batches per epoch for ``kind``: its own cap, else ``steps_limit``."""
        return dict(self.loader_steps).get(kind, self.steps_limit)

    def timeout_for(self, kind: str) -> float:
        return dict(self.loader_timeouts).get(kind, self.timeout_s)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["loaders"] = list(self.loaders)
        d["cpus"] = list(self.cpus)
        d["loader_steps"] = [list(x) for x in self.loader_steps]
        d["loader_timeouts"] = [list(x) for x in self.loader_timeouts]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BenchConfig:
        d = dict(d)
        d["loaders"] = tuple(d.get("loaders", ()))
        d["cpus"] = tuple(d.get("cpus", (None,)))
        d["loader_steps"] = tuple((str(k), int(v)) for k, v in d.get("loader_steps", ()))
        d["loader_timeouts"] = tuple((str(k), float(v)) for k, v in d.get("loader_timeouts", ()))
        return cls(**d)

    def replace(self, **changes) -> BenchConfig:
        return replace(self, **changes)
