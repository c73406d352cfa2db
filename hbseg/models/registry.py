"""Model factory over segmentation_models_pytorch: ``create_model`` and ``list_models``."""

from __future__ import annotations

import difflib
from pathlib import Path

import torch

from hbseg.data.classes import NUM_CLASSES
from hbseg.errors import CheckpointError, ConfigError

__all__ = ["create_model", "list_models", "list_encoders", "load_encoder_weights",
           "COMPETITION_ENCODERS"]

# Encoders the competition's winning teams used: HRNet through timm (smp's "tu-" encoders),
# SegFormer's Mix Transformer through smp's own. The first of each family is the smallest.
COMPETITION_ENCODERS: dict[str, tuple[str, ...]] = {
    "hrnet": ("tu-hrnet_w18_small", "tu-hrnet_w18", "tu-hrnet_w32", "tu-hrnet_w48"),
    "mit": ("mit_b0", "mit_b1", "mit_b2", "mit_b3", "mit_b4", "mit_b5"),
}
# Architectures that dilate the encoder's last stages (output stride 8 or 16); timm's HRNet
# keeps stride 32 and cannot be dilated.
_DILATING = ("deeplabv3", "deeplabv3plus", "pan")


def list_models() -> list[str]:
    """Architecture names accepted by ``create_model`` (smp's, lower-case)."""
    import segmentation_models_pytorch as smp

    return sorted(smp.MODEL_ARCHITECTURES_MAPPING)


def list_encoders() -> list[str]:
    import segmentation_models_pytorch as smp

    return sorted(smp.encoders.get_encoder_names())


def _look_up(name: str, valid: list[str], what: str) -> str:
    key = name.lower()
    if key in valid:
        return key
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown {what} {name!r}{hint} Valid: {', '.join(valid)}")


def create_model(
    arch: str = "unet",
    encoder: str = "resnet34",
    in_channels: int = 1,
    classes: int = NUM_CLASSES,
    weights: str | Path | None = None,
    **kwargs,
) -> torch.nn.Module:
    """An smp model producing ``classes`` logits (sigmoid multi-label, never softmax).

    There is no network at run time: ``weights`` is ``None`` (random init) or a local
    ``.pth``/``.safetensors`` file holding encoder weights (or a whole model's).
    """
    import segmentation_models_pytorch as smp

    arch = _look_up(arch, list_models(), "architecture")
    if encoder.startswith("tu-"):  # any timm model, through smp's universal encoder
        import timm

        if not timm.is_model(encoder[3:]):
            close = difflib.get_close_matches(encoder[3:], timm.list_models(), n=1)
            hint = f"; did you mean 'tu-{close[0]}'?" if close else ""
            raise ConfigError(f"unknown timm encoder {encoder!r}{hint}")
        if encoder[3:].startswith("hrnet") and arch in _DILATING:
            raise ConfigError(f"{arch} dilates the encoder (output stride 8 or 16), which "
                              f"timm's HRNet cannot do; use it with unet, unetplusplus, fpn, "
                              f"segformer, upernet, manet, linknet, pspnet or dpt")
    elif encoder not in smp.encoders.get_encoder_names():
        import timm

        if timm.is_model(encoder):  # a timm name without smp's prefix: say how to write it
            raise ConfigError(f"unknown encoder {encoder!r}; did you mean 'tu-{encoder}' "
                              f"(timm's {encoder} through smp's universal encoder)?")
        _look_up(encoder, list_encoders(), "encoder")
    try:
        model = smp.create_model(
            arch, encoder_name=encoder, encoder_weights=None, in_channels=in_channels,
            classes=classes, **kwargs,
        )
    except (ValueError, KeyError, AttributeError, TypeError, RuntimeError,
            AssertionError) as e:  # timm asserts on settings a model cannot take
        raise ConfigError(f"cannot build {arch} with encoder {encoder}: {e}") from None
    if weights is not None:
        load_encoder_weights(model, weights)
    return model


def load_encoder_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load local weights into the encoder (or the whole model, if the keys say so).

    A 3-channel first convolution is folded to ``in_channels`` by summing over RGB,
    as smp does for pretrained encoders.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("weights file not found", path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read is the same problem to the user
        raise CheckpointError(f"cannot read weights ({type(e).__name__}: {e})", path) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    target = model
    if not any(k.startswith(("encoder.", "decoder.")) for k in state):
        target = model.encoder
    own = target.state_dict()
    for k, v in list(state.items()):
        if k in own and v.ndim == 4 and own[k].ndim == 4 and v.shape[1] != own[k].shape[1]:
            if own[k].shape[1] == 1:
                state[k] = v.sum(dim=1, keepdim=True)
    # keep what fits by name and shape (a classifier head, or a head for other classes, is
    # left out); smp's encoders override load_state_dict without returning its result, so
    # the matching is done here and nn.Module's own method does the loading
    fitting = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not fitting:
        raise CheckpointError(
            f"no tensor in the file matches the model ({len(state)} keys, none fits)", path
        )
    torch.nn.Module.load_state_dict(target, fitting, strict=False)
