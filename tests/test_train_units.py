"""Training core parts on their own: losses, schedule, Dice, AMP, config, resume rules, plot."""

from __future__ import annotations

import io
import json

import pytest
import torch

from hbseg.data.classes import NUM_CLASSES
from hbseg.errors import ConfigError
from hbseg.train.amp import resolve_amp
from hbseg.train.config import TrainConfig, load_config, save_config
from hbseg.train.losses import LOSSES, get_loss
from hbseg.train.metrics import DiceMeter
from hbseg.train.resume import resume_config, truncate_metrics
from hbseg.train.schedule import WarmupCosine, build_scheduler


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"out": "run", "data": "data", **kw})


# ----------------------------------------------------------------------------- losses
@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_prefers_the_truth_and_is_multilabel(name):
    g = torch.Generator().manual_seed(0)
    target = (torch.rand(2, 4, 16, 16, generator=g) > 0.5).to(torch.uint8)
    target[:, 1] = target[:, 0]  # two classes on the same pixels: only sigmoid can say both
    good = (target.float() * 2 - 1) * 8  # confident and right
    bad = -good
    loss = get_loss(name)
    lg, lb = loss(good, target), loss(bad, target)
    assert lg.dtype == torch.float32 and lg.ndim == 0
    assert lg < 0.05 < lb
    # computes in float32 whatever the autocast dtype of the logits
    assert loss(good.half(), target).dtype == torch.float32


def test_loss_gradients_flow():
    logits = torch.zeros(1, 3, 8, 8, requires_grad=True)
    target = torch.ones(1, 3, 8, 8, dtype=torch.uint8)
    get_loss("focal_dice")(logits, target).backward()
    assert logits.grad is not None and (logits.grad < 0).all()


def test_unknown_loss_lists_valid():
    with pytest.raises(ConfigError, match="bce_dice") as e:
        get_loss("bce_dic")
    assert "did you mean 'bce_dice'" in str(e.value)
    assert get_loss("BCE+Dice") is LOSSES["bce_dice"]


# --------------------------------------------------------------------------- schedule
def test_warmup_then_cosine():
    f = WarmupCosine(warmup_steps=4, total_steps=20, min_ratio=0.1)
    assert [f(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0)
    assert f(12) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert f(20) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)
    values = [f(i) for i in range(4, 21)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_scheduler_drives_adamw_and_survives_state_dict():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = build_scheduler(opt, steps_per_epoch=5, epochs=4, warmup_epochs=1, min_ratio=0.0)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(2e-4) and lrs[4] == pytest.approx(1e-3)
    assert lrs[-1] < 2e-5 and lrs == sorted(lrs[:5]) + sorted(lrs[5:], reverse=True)
    torch.save(sched.state_dict(), io.BytesIO())  # picklable: the lambda is an object


# ------------------------------------------------------------------------------ Dice
def test_dice_known_values_and_empty_classes():
    m = DiceMeter(3)
    target = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    target[0, 0, :2] = 1  # 8 px
    logits = torch.full((1, 3, 4, 4), -5.0)
    logits[0, 0, :1] = 5.0  # 4 px predicted, all right
    logits[0, 1, 0, 0] = 5.0  # a false positive where truth is empty
    m.update(logits, target)
    per = m.per_class()
    assert per[0] == pytest.approx(2 * 4 / (4 + 8))
    assert per[1] == 0.0
    assert per[2] == 1.0  # empty prediction, empty truth
    assert m.mean() == pytest.approx(sum(per) / 3)


def test_dice_threshold_is_sigmoid_half():
    m = DiceMeter(1)
    target = torch.ones(1, 1, 1, 2, dtype=torch.uint8)
    m.update(torch.tensor([[[[1e-3, -1e-3]]]]), target)
    assert m.per_class()[0] == pytest.approx(2 * 1 / (1 + 2))


def test_dice_accumulates_over_batches_not_per_batch():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, NUM_CLASSES, 8, 8, generator=g)
    target = (torch.rand(6, NUM_CLASSES, 8, 8, generator=g) > 0.7).to(torch.uint8)
    whole, parts = DiceMeter(NUM_CLASSES), DiceMeter(NUM_CLASSES)
    whole.update(logits, target)
    for i in range(0, 6, 4):  # a partial last batch
        parts.update(logits[i:i + 4], target[i:i + 4])
    assert whole.per_class() == pytest.approx(parts.per_class())


def test_dice_full_resolution_upsamples_logits():
    m = DiceMeter(2)
    logits = torch.full((2, 2, 4, 4), -4.0)
    logits[:, 0, :, :2] = 4.0  # left half of class 0
    masks = []
    for h, w in ((8, 12), (16, 8)):
        mk = torch.zeros(2, h, w, dtype=torch.uint8)
        mk[0, :, : w // 2] = 1
        masks.append(mk)
    m.update(logits, masks)
    assert m.per_class() == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="2 masks"):
        m.update(logits[:1], masks)


# ------------------------------------------------------------------------------- AMP
def test_amp_on_cpu_is_fp32_and_fp16_is_refused():
    a = resolve_amp("auto", "cpu")
    assert a.dtype is None and a.name == "fp32" and not a.use_scaler
    assert not a.grad_scaler().is_enabled()
    assert resolve_amp("off", "cpu").dtype is None
    for mode in ("fp16", "bf16"):
        with pytest.raises(ConfigError, match="needs a CUDA device"):
            resolve_amp(mode, "cpu")


@pytest.mark.gpu
def test_amp_on_cuda():
    a = resolve_amp("auto", "cuda")
    expect = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert a.dtype == expect
    f = resolve_amp("fp16", "cuda")
    assert f.use_scaler and f.grad_scaler().is_enabled()


# ---------------------------------------------------------------------------- config
def test_config_roundtrip_yaml_and_json(tmp_path):
    cfg = _cfg(crop=128, size=64, grad_clip=None)
    for name in ("config.yaml", "config.json"):
        save_config(cfg, tmp_path / name)
        assert load_config(tmp_path / name) == cfg
    text = (tmp_path / "config.yaml").read_text()
    assert "arch: unet" in text and "clahe_tile_grid" in text


@pytest.mark.parametrize("kw,msg", [
    (dict(loader="dali-cache"), "needs --device cuda"),
    (dict(amp="fp16"), "needs --device cuda"),
    (dict(loss="softmax"), "Valid: bce, dice, focal, lovasz, tversky, jaccard, gdice, bce_dice, focal_dice"),
    (dict(loader="nope"), "unknown loader"),
    (dict(size=8), "at least 16"),
    (dict(fold=-2), "--fold"),
    (dict(grad_clip=-1.0), "--grad-clip"),
])
def test_config_rejects_bad_combinations(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        _cfg(**kw)


def test_loader_configs_follow_the_run():
    cfg = _cfg(size=64, crop=100, batch_size=3, val_batch_size=5, val_full_res=True, seed=7)
    tr, ev = cfg.loader_config("train", 1, 2), cfg.loader_config("eval", 1, 2)
    assert (tr.size, tr.crop, tr.batch_size, tr.seed, tr.shard_id, tr.num_shards) == (64, 100, 3, 7, 1, 2)
    assert not tr.full_res_mask and tr.augment.ssr_p > 0
    assert ev.crop is None and ev.batch_size == 5 and ev.full_res_mask
    assert ev.augment.ssr_p == 0 and ev.augment.brightness_contrast_p == 0
    assert ev.augment.clahe_p == cfg.augment.clahe_p  # CLAHE is part of the input


# ---------------------------------------------------------------------------- resume
def test_resume_config_allows_only_harmless_changes():
    saved = _cfg(epochs=3, stop_after=2, lr=1e-3)
    out = resume_config(saved, {"epochs": 5, "workers": 0, "out": "elsewhere"})
    assert out.epochs == 5 and out.workers == 0 and out.stop_after is None
    assert out.out == "elsewhere"  # the folder being resumed, where it is now (moved, copied)
    assert resume_config(saved, {"lr": 1e-3}).lr == 1e-3  # same value: fine
    with pytest.raises(ConfigError, match=r"--lr \(run has 0.001, given 0.01\)"):
        resume_config(saved, {"lr": 1e-2, "epochs": 4})


def test_truncate_metrics_drops_unfinished_epochs(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text("".join(json.dumps({"epoch": e, "loss": 1.0 / e}) + "\n" for e in (1, 2, 3))
                 + '{"epoch": 4, "lo')
    kept = truncate_metrics(p, 2)
    assert [r["epoch"] for r in kept] == [1, 2]
    assert p.read_text().count("\n") == 2


# ------------------------------------------------------------------------------ plot
def test_plot_curves_writes_png(tmp_path):
    from hbseg.train.plot import plot_curves

    recs = [{"epoch": e, "loss": 1 / e, "val_loss": 1.1 / e if e % 2 == 0 else None,
             "mean_dice": None if e % 2 else 1 - 1 / e} for e in range(1, 7)]
    path = plot_curves(recs, tmp_path / "curves.png", title="t")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 100_000
