"""The model registry's contract, over every architecture it lists: 1 channel in, 29 out,
forward and backward; unknown names; local weights files; self-describing checkpoints."""

from __future__ import annotations

import pytest
import torch

from hbseg.data.classes import CLASSES, NUM_CLASSES
from hbseg.errors import CheckpointError, ConfigError
from hbseg.models import (
    ModelCard,
    create_model,
    list_models,
    load_model,
    read_checkpoint,
    save_checkpoint,
)

# What each architecture needs to be built small. DPT is a ViT decoder: smp accepts only
# timm ("tu-") encoders for it, so it gets timm's tiny test ViT. PAN pools its deepest
# features to 1/64 of the input side and needs at least 128 px.
ENCODER = {"dpt": "tu-test_vit"}
SIZE = {"pan": 128}


def test_registry_lists_smp_architectures():
    names = list_models()
    assert names == sorted(names)
    for arch in ("unet", "unetplusplus", "fpn", "deeplabv3plus", "segformer", "upernet", "manet"):
        assert arch in names


@pytest.mark.parametrize("arch", list_models())
def test_every_architecture_trains_on_one_channel(arch):
    torch.manual_seed(0)
    model = create_model(arch, ENCODER.get(arch, "resnet18"))
    size = SIZE.get(arch, 64)
    x = torch.randn(2, 1, size, size)
    model.train()
    y = model(x)
    assert y.shape == (2, NUM_CLASSES, size, size)
    assert torch.isfinite(y).all()
    y.float().mean().backward()
    # the input convolution and the output head both learn (some architectures leave
    # parts of their encoder unused, e.g. pspnet's deep stages; DDP is told, see trainer)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 1 and first.weight.grad is not None
    head = [p for p in model.segmentation_head.parameters()]
    assert head and all(p.grad is not None and torch.isfinite(p.grad).all() for p in head)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        create_model("unett", "resnet18")
    msg = str(e.value)
    assert "did you mean 'unet'" in msg and all(a in msg for a in list_models())
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        create_model("unet", "resnet19")
    with pytest.raises(ConfigError, match="unknown timm encoder"):
        create_model("unet", "tu-no_such_net")
    assert create_model("UNet", "resnet18").__class__.__name__ == "Unet"  # case-insensitive


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_encoder_weights_load(tmp_path, suffix):
    torch.manual_seed(1)
    donor = create_model("unet", "resnet18")
    state = {k: v.contiguous() for k, v in donor.encoder.state_dict().items()}
    path = tmp_path / f"enc{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    torch.manual_seed(2)
    model = create_model("fpn", "resnet18", weights=path)  # another decoder, same encoder
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_rgb_encoder_weights_fold_to_one_channel(tmp_path):
    import segmentation_models_pytorch as smp

    rgb = smp.encoders.get_encoder("resnet18", in_channels=3, weights=None)
    path = tmp_path / "rgb.pth"
    torch.save(rgb.state_dict(), path)
    model = create_model("unet", "resnet18", weights=path)
    expect = rgb.state_dict()["conv1.weight"].sum(dim=1, keepdim=True)
    assert torch.allclose(model.encoder.conv1.weight, expect)


def test_whole_model_weights_and_bad_files(tmp_path):
    donor = create_model("unet", "resnet18")
    whole = tmp_path / "whole.pth"
    torch.save({"state_dict": donor.state_dict()}, whole)
    model = create_model("unet", "resnet18", weights=whole)
    assert torch.equal(model.segmentation_head[0].weight, donor.segmentation_head[0].weight)
    with pytest.raises(CheckpointError, match="not found"):
        create_model("unet", "resnet18", weights=tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    torch.save({"nothing.here": torch.zeros(1)}, junk)
    with pytest.raises(CheckpointError, match="no tensor in the file matches"):
        create_model("unet", "resnet18", weights=junk)


def test_checkpoint_round_trip_needs_only_the_path(tmp_path):
    model = create_model("fpn", "resnet18").eval()
    card = ModelCard("fpn", "resnet18", size=128, crop=256)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, card, epoch=3)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left behind
    loaded, got = load_model(path)
    assert got == card and got.class_names == CLASSES and read_checkpoint(path)["epoch"] == 3
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(path)


# The winners' encoder families at their smallest size, over every architecture smp builds
# them with (README: "Encoders the winning teams used"). HRNet cannot be dilated, so the
# DeepLabs and PAN refuse it; smp refuses MiT for Linknet, UNet++ and DPT.
FAMILY_ARCHS = {
    "tu-hrnet_w18_small": ("dpt", "fpn", "linknet", "manet", "pspnet", "segformer", "unet",
                           "unetplusplus", "upernet"),
    "mit_b0": ("deeplabv3", "deeplabv3plus", "fpn", "manet", "pan", "pspnet", "segformer",
               "unet", "upernet"),
}


WINNERS_ARCHS = ("unet", "segformer", "upernet")  # the rest of the matrix runs as slow


@pytest.mark.parametrize("encoder, arch", [
    pytest.param(e, a, marks=() if a in WINNERS_ARCHS else pytest.mark.slow)
    for e, archs in FAMILY_ARCHS.items() for a in archs])
def test_competition_encoders_train_on_one_channel(encoder, arch):
    torch.manual_seed(0)
    model = create_model(arch, encoder).train()
    size = 128 if arch == "pan" else 64
    y = model(torch.randn(2, 1, size, size))
    assert y.shape == (2, NUM_CLASSES, size, size) and torch.isfinite(y).all()
    y.float().mean().backward()
    head = list(model.segmentation_head.parameters())
    assert head and all(p.grad is not None and torch.isfinite(p.grad).all() for p in head)


@pytest.mark.parametrize("encoder", ["tu-hrnet_w18_small", "mit_b0"])
def test_competition_encoders_refuse_what_they_cannot_do(encoder):
    from hbseg.models.registry import COMPETITION_ENCODERS

    assert encoder == next(v[0] for v in COMPETITION_ENCODERS.values() if encoder in v)
    for arch in sorted(set(list_models()) - set(FAMILY_ARCHS[encoder])):
        with pytest.raises(ConfigError, match=f"{arch}|{encoder}"):
            create_model(arch, encoder)
    with pytest.raises(ConfigError, match="did you mean 'tu-hrnet_w18'"):
        create_model("unet", "hrnet_w18")
