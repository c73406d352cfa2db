"""hbseg-eval --report: the HTML report, checked on disk and in a real headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import make_dataset, run_main

from hbseg.data import rasterize, read_polygons, resolve_split, scan_split
from hbseg.data.classes import CLASSES, NUM_CLASSES, class_palette
from hbseg.data.masks import unpack_masks
from hbseg.infer.csv_io import write_submission
from hbseg.infer.rle import encode_masks

CHROMEDRIVER = Path("/usr/bin/chromedriver")
GONE = CLASSES.index("finger-7")  # a big bone whose bits sit in the packed PNG's first byte,
# where the alpha byte is 0: a canvas-based decoder would lose it to premultiplied alpha
FN_RGB = (56, 150, 255)  # viewer.js ERR.fn


def _gt(row) -> np.ndarray:
    return rasterize(read_polygons(row.json_path, row.width, row.height), row.height, row.width)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """6 synthetic hands at 128 px; model "good" is the ground truth except finger-7 missing on
    one image (the worst), model "shifted" is the ground truth two pixels to the right."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("report")
    root = make_dataset(tmp / "data", ids=3, size=128, test_ids=0)
    df = scan_split(resolve_split(root, "train"), labelled=True, exclude=())
    worst = df["image_name"].iloc[2]
    good, shifted = [], []
    for r in df.itertuples(index=False):
        m = _gt(r)
        a = m.copy()
        if r.image_name == worst:
            assert m[GONE].sum() > 50
            a[GONE] = 0
        good.append((r.image_name, encode_masks(a)))
        shifted.append((r.image_name, encode_masks(np.roll(m, 2, axis=2))))
    write_submission(tmp / "good.csv", good)
    write_submission(tmp / "shifted.csv", shifted)
    from hbseg.report.cli import eval_main

    out = tmp / "report"
    code = run_main(eval_main, ["--pred", tmp / "good.csv", "--pred", tmp / "shifted.csv",
                                "--data", root, "--report", out, "--workers", 1, "--quiet"], mp)
    mp.undo()
    assert code == 0
    return {"out": out, "worst": worst, "df": df, "tmp": tmp}


def _page_data(out: Path) -> dict:
    text = (out / "data.js").read_text()
    assert text.startswith("window.HBSEG_DATA = ")
    return json.loads(text[len("window.HBSEG_DATA = "):].rstrip().rstrip(";"))


def test_report_folder_is_complete_and_offline(built):
    out, df = built["out"], built["df"]
    for name in ("index.html", "viewer.js", "png.js", "style.css", "data.js", "dice.csv"):
        assert (out / name).is_file(), name
    assert len(list((out / "masks").glob("*.js"))) == len(df)
    assert len(list((out / "img").iterdir())) == len(df)
    assert not list((out / "full").iterdir())  # 128 px images need no second, larger copy
    for name in ("index.html", "viewer.js", "png.js", "style.css"):
        assert not re.search(r"https?://", (out / name).read_text()), f"{name} refers to the network"
    page = _page_data(out)
    assert [m["name"] for m in page["models"]] == ["good", "shifted"]
    # the report's means are hbseg-eval's
    for m in page["models"]:
        res = json.loads((built["tmp"] / f"{m['name']}.eval.json").read_text())
        assert m["mean"] == pytest.approx(res["mean_dice"], abs=1e-5)
    worst = next(im for im in page["images"] if im["name"] == built["worst"])
    assert worst["dice"][0][GONE] == 0.0 and sum(worst["dice"][0]) == NUM_CLASSES - 1


def test_report_masks_are_the_packed_ground_truth_and_prediction(built):
    out, df = built["out"], built["df"]
    page = _page_data(out)
    im = next(im for im in page["images"] if im["name"] == built["worst"])
    script = (out / "masks" / f"{im['key']}.js").read_text()
    key, gt_b64, preds_b64 = json.loads("[" + script[script.index("(") + 1:script.rindex(")")] + "]")
    assert key == im["key"] and len(preds_b64) == 2

    def decode(b64):
        bgra = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_UNCHANGED)
        return unpack_masks(np.ascontiguousarray(bgra[..., [2, 1, 0, 3]]))

    row = df[df["image_name"] == built["worst"]].iloc[0]
    gt = _gt(row)
    np.testing.assert_array_equal(decode(gt_b64), gt)
    pred = decode(preds_b64[0])
    assert pred[GONE].sum() == 0 and np.array_equal(np.delete(pred, GONE, 0), np.delete(gt, GONE, 0))


def test_out_with_several_preds_is_a_usage_error(built, monkeypatch, capsys):
    from hbseg.report.cli import eval_main

    tmp = built["tmp"]
    code = run_main(eval_main, ["--pred", tmp / "good.csv", "--pred", tmp / "shifted.csv",
                                "--data", tmp / "data", "--out", tmp / "x.json", "--quiet"], monkeypatch)
    assert code == 2 and "--out takes one --pred" in capsys.readouterr().err


# ---------- in a real browser ----------

def _chromium() -> tuple[str, str]:
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None or not CHROMEDRIVER.is_file():
        pytest.skip("no Chromium browser and driver: on Debian, apt-get install chromium "
                    "chromium-driver (.ci/run does) to run the browser test")
    return browser, str(CHROMEDRIVER)


@pytest.fixture(scope="module")
def browser():
    browser_path, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser_path
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1500,1000", "--disable-background-networking",
              "--disable-component-update", "--force-device-scale-factor=1"):
        opts.add_argument(a)
    # an explicit driver path: Selenium Manager (which downloads drivers) never runs
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    yield driver
    driver.quit()


def _wait(driver, script: str, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    errors = driver.execute_script("return document.querySelector('#error').textContent")
    raise AssertionError(f"timed out waiting for {script!r}; page error: {errors!r}")


def _renders(driver) -> int:
    return int(driver.execute_script("return document.body.dataset.renders || 0"))


def _click_and_wait(driver, css: str) -> None:
    before = _renders(driver)
    driver.find_element("css selector", css).click()
    _wait(driver, f"return (+document.body.dataset.renders || 0) > {before}")


def _panel_rgb(driver, model: str) -> np.ndarray:
    png = driver.find_element("css selector", f'.panel[data-model="{model}"] .viewport').screenshot_as_png
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1].astype(int)


def _near(img: np.ndarray, rgb, tol: int = 12) -> int:
    return int((np.abs(img - np.asarray(rgb)).max(-1) <= tol).sum())


def _coloured(img: np.ndarray) -> int:
    """Pixels with colour in them; the radiograph under the masks is grey."""
    return int((img.max(-1) - img.min(-1) > 40).sum())


def test_report_in_chromium_toggles_a_bone_and_lists_the_worst_image_first(built, browser, tmp_path):
    browser.get((built["out"] / "index.html").as_uri())
    _wait(browser, "return document.body.dataset.renders")
    rows = browser.find_elements("css selector", "#images tbody tr")
    assert len(rows) == len(built["df"])
    assert rows[0].get_attribute("data-name") == built["worst"]  # sorted worst first
    assert len(browser.find_elements("css selector", ".panel")) == 3  # ground truth + 2 models
    assert browser.execute_script("return document.querySelector('#error').hidden")

    # full opacity, so the false-negative colour is painted exactly; then hide every bone
    browser.execute_script("const o = document.querySelector('#opacity'); o.value = 100;"
                           "o.dispatchEvent(new Event('input'));")
    _click_and_wait(browser, "#no-classes")
    gt_off, pred_off = _panel_rgb(browser, "gt"), _panel_rgb(browser, "0")
    assert _coloured(gt_off) == 0 and _near(pred_off, FN_RGB) == 0

    _click_and_wait(browser, f"#cls-{GONE}")
    gt_on, pred_on = _panel_rgb(browser, "gt"), _panel_rgb(browser, "0")
    cv2.imwrite(str(tmp_path / "bone-on.png"), np.concatenate([gt_on, pred_on], 1)[..., ::-1].astype(np.uint8))
    assert _coloured(gt_on) > 100, "the bone did not appear in the ground-truth panel"
    colour = gt_on[gt_on.max(-1) - gt_on.min(-1) > 40]
    # its pixels carry the bone's own colour (fill or outline), not some other bone's
    hue = lambda rgb: cv2.cvtColor(np.uint8([[rgb]]), cv2.COLOR_RGB2HSV)[0, 0, 0]  # noqa: E731
    want = int(hue(class_palette()[GONE]))
    got = np.array([hue(c) for c in colour.astype(np.uint8)[::7]], int)
    assert np.mean(np.minimum(np.abs(got - want), 180 - np.abs(got - want)) <= 6) > 0.9
    assert _near(pred_on, FN_RGB) > 100, "the missed bone is not painted as a false negative"

    _click_and_wait(browser, f"#cls-{GONE}")
    assert _coloured(_panel_rgb(browser, "gt")) == 0
    assert _near(_panel_rgb(browser, "0"), FN_RGB) == 0
