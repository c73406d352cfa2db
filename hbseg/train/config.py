"""The one frozen settings object of a training run, saved as ``RUN_DIR/config.yaml``."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from hbseg.dali_pipes.config import AugmentConfig, LoaderConfig, NormalizeConfig
from hbseg.errors import ConfigError

from .rules import FIELD_RULES, field_problem, nested_problem, option_name

__all__ = ["TrainConfig", "LOADERS", "AMP_MODES", "CONFIG_NAME", "save_config", "load_config"]

LOADERS = ("dali", "dali-cache", "torch", "baseline")
AMP_MODES = ("auto", "bf16", "fp16", "off")
CONFIG_NAME = "config.yaml"


@dataclass(frozen=True)
class TrainConfig:
    """Every option of ``hbseg-train``; ``None`` means "use the default".

    epochs plans the schedule (warmup, cosine); ``stop_after`` ends one invocation early
    (a time-sliced job) without changing the plan, so ``--resume`` continues exactly.
    """

    out: str
    data: str | None = None
    cache: str | None = None  # mask cache folder; default DATA/hbseg-cache
    spec: str | None = None  # data set description file; default DATA/hbseg-dataset.yaml, else hands
    loader: str = "dali"
    device: str = "cpu"
    arch: str = "unet"
    encoder: str = "resnet34"
    weights: str | None = None  # local encoder (or whole-model) weights
    size: int = 512
    crop: int | None = None
    batch_size: int = 8
    val_batch_size: int | None = None
    epochs: int = 30
    stop_after: int | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio
    loss: str = "bce_dice"
    fold: int = 0  # validation fold; -1 trains on every fold without validation
    split: str = "seeded"  # how patients are dealt into folds (hbseg.data.split.SPLITS)
    pseudo: str | None = None  # submission CSV whose masks label extra training images
    pseudo_data: str | None = None  # the folder holding those images (ROOT/test)
    pseudo_weight: float = 1.0  # a pseudo image's expected appearances per epoch
    tensorboard: bool = True  # TensorBoard event files in RUN_DIR/tb
    roi_crop: float | None = None  # hand ROI crop margin (label box in training); None: off
    canonical_hand: str | None = None  # "right"/"left": mirror the other side's images
    amp: str = "auto"
    val_every: int = 1
    val_full_res: bool = False
    workers: int | None = None  # DALI CPU threads or DataLoader workers; None: see workers_for
    seed: int = 0
    compile: bool = False
    compile_mode: str = "default"  # with compile: a hbseg.train.fast.COMPILE_MODES name
    grad_clip: float | None = 1.0  # max gradient norm; None or 0 turns clipping off
    channels_last: bool = True
    deterministic: bool = False  # torch.use_deterministic_algorithms (CPU runs are already)
    log_every: int = 10  # steps between loss read-backs (progress bar and NaN check)
    progress: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig.hand_xray)  # HAND_XRAY
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ConfigError(msg)

        if self.loader not in LOADERS:
            bad(f"unknown loader {self.loader!r}. Valid: {', '.join(LOADERS)}")
        if self.amp not in AMP_MODES:
            bad(f"unknown amp mode {self.amp!r}. Valid: {', '.join(AMP_MODES)}")
        for name in FIELD_RULES:  # each setting's range (rules.py), nan and inf refused
            problem = field_problem(name, getattr(self, name))
            if problem is not None:
                bad(f"{option_name(name)} is {getattr(self, name)!r}; {problem}")
        if self.device == "cpu" and self.loader == "dali-cache":
            bad("--loader dali-cache keeps decoded images in GPU memory and needs --device cuda; "
                "use --loader dali or torch on CPU")
        if self.device == "cpu" and self.amp in ("bf16", "fp16"):
            bad(f"--amp {self.amp} needs --device cuda; on CPU use --amp off (or auto)")
        from hbseg.data.split import SPLITS

        if self.split not in SPLITS:
            bad(f"unknown --split {self.split!r}. Valid: {', '.join(SPLITS)}")
        if (self.pseudo is None) != (self.pseudo_data is None):
            bad("--pseudo CSV and --pseudo-data FOLDER go together (the CSV's masks and "
                "the images they label)")
        if self.pseudo is not None and self.loader == "baseline":
            bad("--loader baseline rasterises JSON polygons and cannot read pseudo-label "
                "masks; use --loader torch or dali")
        if self.roi_crop is not None or self.canonical_hand is not None:
            from hbseg.dali_pipes.roi import check_geometry

            check_geometry(self.roi_crop, self.canonical_hand)
            if self.roi_crop is not None and self.crop is not None:
                bad("--roi-crop and --crop exclude each other (both choose the window)")
            if self.loader == "baseline":
                bad("--loader baseline is the competition's own pipeline; --roi-crop and "
                    "--canonical-hand need --loader dali, dali-cache or torch")
            if self.val_full_res:
                bad("--val-full-res scores at the original frame; with --roi-crop or "
                    "--canonical-hand validation is scored in the model's frame (leave it out)")
        from .losses import get_loss

        get_loss(self.loss)  # unknown → ConfigError listing the valid ones
        if self.data is None:
            bad("--data ROOT is required")

    # -- loaders --------------------------------------------------------------------
    def workers_for(self, num_shards: int = 1) -> int:
        """``--workers``, or by default: on CUDA the cores this process may use (shared by
        the ranks), since PNG decoding still runs on CPU threads there; 2 on CPU, where the
        same cores also train the model."""
        if self.workers is not None:
            return self.workers
        if self.device.startswith("cuda"):
            return max(1, len(os.sched_getaffinity(0)) // max(1, num_shards))
        return 2

    def loader_config(self, mode: str, shard_id: int = 0, num_shards: int = 1) -> LoaderConfig:
        """The LoaderConfig of the training (random crop, augmentation) or eval side."""
        if mode == "train":
            return LoaderConfig(
                size=self.size, crop=self.crop, batch_size=self.batch_size,
                num_threads=self.workers_for(num_shards), seed=self.seed, shard_id=shard_id,
                num_shards=num_shards, augment=self.augment, normalize=self.normalize,
                roi_margin=self.roi_crop, canonical_hand=self.canonical_hand,
            )
        if mode == "eval":
            # CLAHE is part of the input's definition and stays; nothing random does
            augment = replace(self.augment, ssr_p=0.0, hflip_p=0.0, brightness_contrast_p=0.0)
            return LoaderConfig(
                size=self.size, crop=None, batch_size=self.val_batch_size or self.batch_size,
                num_threads=self.workers_for(num_shards), seed=self.seed, shard_id=shard_id,
                num_shards=num_shards, full_res_mask=self.val_full_res, augment=augment,
                normalize=self.normalize, roi_margin=self.roi_crop,
                canonical_hand=self.canonical_hand,
            )
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")

    # -- (de)serialisation ----------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["augment"]["clahe_tile_grid"] = list(self.augment.clahe_tile_grid)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training settings: {', '.join(unknown)}")
        try:
            if isinstance(d.get("augment"), dict):
                aug = dict(d["augment"])
                if "clahe_tile_grid" in aug:
                    aug["clahe_tile_grid"] = tuple(aug["clahe_tile_grid"])
                d["augment"] = AugmentConfig.hand_xray(**aug)  # a partial block keeps the recipe
            if isinstance(d.get("normalize"), dict):
                d["normalize"] = NormalizeConfig(**d["normalize"])  # lists become tuples there
        except ValueError as e:  # a range check of those classes (a saved config, a checkpoint's)
            raise ConfigError(f"invalid augment or normalize setting: {e}") from None
        return cls(**d)

    def replace(self, **changes) -> TrainConfig:
        return replace(self, **changes)


def _fits(value, annotation: str) -> bool:
    """Whether a YAML/JSON value fits a field annotated ``annotation`` (as a string)."""
    if value is None:
        return "None" in annotation
    ok = {"bool": lambda v: isinstance(v, bool),
          "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "str": lambda v: isinstance(v, str)}
    for part in annotation.split(" | "):
        if part.startswith("tuple["):
            inner = part[6:-1].split(", ")[0]
            if isinstance(value, (list, tuple)) and all(ok[inner](v) for v in value):
                return True
        elif part in ok and ok[part](value):
            return True
    return False


def _check_keys(d: dict, cls, where: str, path: Path) -> None:
    import difflib

    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    for key, value in d.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown setting {where + str(key)!r}{hint}", path)
        kind = fields[key]
        if kind not in ("AugmentConfig", "NormalizeConfig") and not _fits(value, kind):
            raise ConfigError(f"{where}{key} is {value!r}; expected {kind}", path)


def check_settings(d: dict, path: Path) -> None:
    """Every key of a settings mapping, before anything is built from it: a known name, a
    value of its type and in its range (``rules.FIELD_RULES``), and ``augment`` and
    ``normalize`` as their classes accept them. Errors name the file and the key."""
    _check_keys(d, TrainConfig, "", path)
    for key, value in d.items():
        problem = field_problem(key, value)
        if problem is not None:
            raise ConfigError(f"{key} is {value!r}; {problem}", path)
    from hbseg.data.split import SPLITS

    for key, choices in (("loader", LOADERS), ("amp", AMP_MODES), ("split", SPLITS)):
        if key in d and d[key] not in choices:
            raise ConfigError(f"{key} is {d[key]!r}; expected one of {', '.join(choices)}", path)
    if "loss" in d:
        from .losses import get_loss

        try:
            get_loss(d["loss"])
        except ConfigError as e:
            raise ConfigError(f"loss: {e.problem}", path) from None
    if "arch" in d:
        from hbseg.models import list_models

        if str(d["arch"]).lower() not in list_models():
            raise ConfigError(f"arch is {d['arch']!r}; expected one of {', '.join(list_models())}",
                              path)
    for key, cls in (("augment", AugmentConfig), ("normalize", NormalizeConfig)):
        if key not in d:
            continue
        if not isinstance(d[key], dict):
            raise ConfigError(f"{key!r} must be a mapping of its settings", path)
        _check_keys(d[key], cls, f"{key}.", path)
        found = nested_problem(cls, d[key])
        if found is not None:
            sub, message = found
            if sub is None:
                raise ConfigError(f"{key}: {message}", path)
            if message.startswith(f"{sub} "):  # "hflip_p must be in [0, 1] …"
                raise ConfigError(f"{key}.{message}", path)
            raise ConfigError(f"{key}.{sub} is {d[key][sub]!r}: {message}", path)


def read_train_settings(path: str | Path) -> dict:
    """The settings in a YAML/JSON file for ``hbseg-train --config``: any ``TrainConfig``
    fields (a run's ``config.yaml`` has them all), ``augment`` and ``normalize`` as
    mappings of their own fields, each checked by ``check_settings``. Unknown names are
    errors naming the closest one."""
    from hbseg.errors import DataError
    from hbseg.regular_files import check_regular
    from hbseg.settings_file import read_mapping

    path = Path(path)
    try:
        check_regular(path, "a YAML or JSON settings file")  # a FIFO would block the reader
    except FileNotFoundError:
        pass  # read_mapping says so
    except DataError as e:  # a settings file, so a usage error like its other faults
        raise ConfigError(e.problem, path) from None
    except OSError as e:
        raise ConfigError(f"cannot read training settings file ({e.strerror})", path) from None
    d = read_mapping(path, "training settings file")
    check_settings(d, path)
    return d


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as JSON (``.json``) or YAML, atomically."""
    from hbseg.atomic import atomic_write_text

    path = Path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps(cfg.to_dict(), indent=2) + "\n"
    else:
        import yaml

        text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    atomic_write_text(path, text)


def load_config(path: str | Path) -> TrainConfig:
    from hbseg.settings_file import read_mapping

    d = read_mapping(path, "run config")
    check_settings(d, Path(path))
    try:
        return TrainConfig.from_dict(d)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid config ({e})", path) from None
