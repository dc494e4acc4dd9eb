"""The results page (adlight/report_page): the data it embeds, and what a user sees in Chromium.

The browser tests drive headless Chromium (Debian's package; ``.ci/run`` installs it) over the
DevTools protocol and skip only when no ``chromium`` is on PATH. Screenshots at a laptop and a
phone width are kept under ``$ADLIGHT_ARTIFACTS`` (default: the test's tmp dir, printed).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from synthetic import make_mvtec_tree

from adlight.cli import main
from adlight.metrics import threshold_metrics
from adlight.report_page import build_run_page
from adlight.report_page.compare import build_compare_page, compare_data
from adlight.report_page.data import confusion_at, curves, page_data
from adlight.report_page.page import render
from adlight.report_page.thumbnails import outline, write_image_files

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fadaeinejad" / "mvtec_ae_l2.yaml"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")


# ----- unit tests: the data the page embeds ------------------------------------------------
@pytest.mark.parametrize("threshold", [-1.0, 0.1, 0.35, 0.5, 0.55, 0.9, 2.0])
def test_confusion_at_equals_the_reports_thresholded_metrics(threshold):
    scores = torch.tensor([0.1, 0.2, 0.35, 0.5, 0.55, 0.9, 0.3])
    labels = torch.tensor([0, 0, 1, 0, 1, 1, 0])
    ours = confusion_at(scores.tolist(), labels.tolist(), threshold)
    assert ours == threshold_metrics(scores, labels, threshold)  # exact, float32 rounding included


def test_confusion_at_edge_cases_match_torchmetrics():
    # no anomalous images at all, and nothing flagged: every ratio is 0 / 0 -> 0, as in metrics.json
    for scores, labels, t in (([0.1, 0.2], [0, 0], 0.5), ([0.1, 0.2], [1, 1], 0.5), ([0.1, 0.2], [0, 0], 0.0)):
        assert confusion_at(scores, labels, t) == threshold_metrics(torch.tensor(scores), torch.tensor(labels), t)


def test_curves_run_from_corner_to_corner_and_are_empty_without_both_classes():
    scores, labels = torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])
    found = curves(scores, labels)
    assert found["roc"][0] == [0.0, 0.0] and found["roc"][-1] == [1.0, 1.0]
    assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y in found["pr"])
    assert curves(scores, torch.zeros(4, dtype=torch.long)) == {"roc": [], "pr": []}


def test_page_data_is_strict_json_and_keeps_scores_exact():
    rows = [{"index": i, "path": f"img{i}.png", "score": s, "label": y, "class": "normal" if y == 0 else "hole"}
            for i, (s, y) in enumerate([(0.1, 0), (float(torch.tensor(0.3)), 1), (0.7, 1)])]
    report = {"image_threshold": float(torch.tensor(0.3)), "image_threshold_source": "validation split, F1-optimal",
              "pixel_threshold": None, "pixel_AUROC": math.nan}
    data = page_data(report, rows)
    text = json.dumps(data, allow_nan=False)
    back = json.loads(text)
    assert [im["score"] for im in back["images"]] == [r["score"] for r in rows]
    assert back["report"]["pixel_AUROC"] is None
    assert back["thresholds"]["image"] == {"value": report["image_threshold"], "source": "validation split, F1-optimal"}
    assert back["classes"] == ["normal", "hole"]


def test_render_keeps_a_hostile_path_inside_the_data_element():
    rows = [{"index": 0, "path": "</script><script>alert(1)</script>{{js}}", "score": 0.5, "label": 0, "class": "normal"}]
    page = render(page_data({}, rows), "run.js")
    assert page.count("</script>") == 2  # the data element's and the code's, none from the path
    assert "<link" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_outline_and_image_files(tmp_path):
    mask = torch.zeros(16, 16)
    mask[4:12, 4:12] = 1
    edge = outline(mask)
    assert edge.sum() == 4 * 8 - 4 and edge[4, 4] and not edge[8, 8]
    amap = torch.zeros(16, 16)
    amap[6:10, 6:10] = 1.0
    written = write_image_files(tmp_path, "00000", torch.rand(3, 16, 16), amap, mask, (0.0, 1.0), 0.5)
    assert set(written) == {"image", "overlay", "predicted"}
    import numpy as np
    from PIL import Image

    predicted = torch.from_numpy(np.asarray(Image.open(tmp_path / written["predicted"]).convert("RGB")))
    assert (predicted[7, 7] == 255).all() and (predicted[0, 0] == 0).all()
    assert predicted[4, 4].tolist() == [0, 255, 0]  # the ground-truth outline
    assert set(write_image_files(tmp_path, "00001", torch.rand(1, 16, 16))) == {"image"}


def test_build_run_page_writes_one_entry_and_file_set_per_image(tmp_path):
    n = 5
    page = build_run_page(tmp_path, {"image_threshold": 0.5, "image_threshold_source": "fixed"},
                          torch.linspace(0, 1, n), torch.tensor([0, 0, 1, 1, 1]), torch.tensor([0, 0, 1, 2, 2]),
                          [f"p{i}.png" for i in range(n)], ["good", "hole", "scratch"],
                          image_at=lambda i: torch.rand(3, 8, 8), anomaly_maps=torch.rand(n, 8, 8),
                          masks=torch.zeros(n, 8, 8))
    data = json.loads((tmp_path / "results.json").read_text())
    assert page.name == "report.html" and len(data["images"]) == n
    assert [im["class"] for im in data["images"]] == ["normal", "normal", "hole", "scratch", "scratch"]
    for im in data["images"]:
        assert (tmp_path / im["image"]).is_file() and (tmp_path / im["overlay"]).is_file()
        assert "predicted" not in im  # no pixel threshold in this report
    # a second page in the same directory overwrites nothing of the first
    second = build_run_page(tmp_path, {}, torch.linspace(0, 1, n), torch.zeros(n, dtype=torch.long),
                            torch.zeros(n, dtype=torch.long), [f"q{i}.png" for i in range(n)],
                            image_at=lambda i: torch.rand(3, 8, 8))
    assert second.name == "report-1.html" and (tmp_path / "results-1.json").is_file()
    assert json.loads((tmp_path / "results.json").read_text()) == data
    assert json.loads((tmp_path / "results-1.json").read_text())["images"][0]["image"].startswith("report_files-1/")


# ----- end to end: a tiny fitted run, its page, and a comparison --------------------------
def _fit(root: Path, run_dir: Path, epochs: int) -> Path:
    size = 32
    main(["fit", f"--config={CONFIG}", f"--data.root={root}", f"--data.image_size={size}", "--data.loader.batch_size=4",
          f"--model.network.init_args.image_size={size}", f"--trainer.max_epochs={epochs}",
          "--trainer.accelerator=cpu", "--trainer.check_val_every_n_epoch=1", f"--trainer.default_root_dir={run_dir}",
          "--trainer.enable_progress_bar=false"])
    return next(run_dir.rglob("metrics.json")).parent


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("page_runs")
    root = make_mvtec_tree(base / "mvtec", n_train=8, n_good_test=6, defects={"scratch": 4, "hole": 4}, size=64)
    return _fit(root, base / "two_epochs", 2), _fit(root, base / "one_epoch", 1)


def test_run_directory_has_the_page_and_results_matching_metrics_json(runs):
    run = runs[0]
    report = json.loads((run / "metrics.json").read_text())
    data = json.loads((run / "results.json").read_text())
    assert (run / "report.html").is_file()
    assert len(data["images"]) == report["n_images"]
    assert sum(im["label"] for im in data["images"]) == report["n_anomalous"]
    assert {im["class"] for im in data["images"]} == {"normal", "hole", "scratch"}
    t = report["image_threshold"]
    found = confusion_at([im["score"] for im in data["images"]], [im["label"] for im in data["images"]], t)
    for key in ("F1", "precision", "recall"):
        assert found[key] == report[f"image_{key}"], key
    # the confusion table (confusion.csv, tests/test_misclassified.py): per class, then ALL
    assert [row["class"] for row in data["confusion"]] == ["hole", "scratch", "ALL"]
    assert {k: data["confusion"][-1][k] for k in ("TP", "FP", "TN", "FN")} == {
        k: found[k] for k in ("TP", "FP", "TN", "FN")}
    assert (run / "confusion.csv").is_file()
    assert (run / "misclassified.png").is_file() == (found["FP"] + found["FN"] > 0)
    for im in data["images"]:
        assert all((run / im[k]).is_file() for k in ("image", "overlay", "predicted"))
    # the PRO curve behind the report's AUPRO: from (0, 0) up to every region covered
    pro = data["curves"]["pro"]
    assert pro[0] == [0.0, 0.0] and pro[-1] == [1.0, 1.0] and "pixel_AUPRO" in report
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(pro, pro[1:], strict=False))


def test_compare_matches_images_by_path_and_links_each_runs_maps(runs, tmp_path):
    data = compare_data(list(runs), tmp_path)
    assert len(data["runs"]) == 2
    n = json.loads((runs[0] / "metrics.json").read_text())["n_images"]
    assert len(data["images"]) == n
    for im in data["images"]:
        assert all(entry is not None for entry in im["runs"])
        for entry in im["runs"]:
            assert (tmp_path / entry["overlay"]).resolve().is_file()
    scores = [im["runs"][0]["score"] for im in data["images"]]
    assert scores == sorted(scores, reverse=True)
    # the command line: a root above lightning_logs/ is accepted too
    main(["compare", str(runs[0]), str(runs[1].parents[1]), "--out", str(tmp_path / "page")])
    assert "one_epoch/version_0" in (tmp_path / "page" / "compare.html").read_text()


def test_compare_command_line_errors_name_the_directory(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(tmp_path / "missing"), str(tmp_path)])
    assert exit_info.value.code == 2
    assert "missing does not exist" in capsys.readouterr().err


# ----- in a real browser -------------------------------------------------------------------
class Chromium:
    """Headless Chromium on a fresh profile, driven over the DevTools protocol."""

    def __init__(self, profile: Path) -> None:
        import websocket

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("chromium did not start its DevTools server")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30).read())
        page = next(t for t in targets if t["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.events: list[dict] = []
        self.next_id = 0
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def open(self, path: Path) -> None:
        self.call("Page.navigate", url=path.resolve().as_uri())
        deadline = time.monotonic() + 60
        while self.evaluate("document.readyState") != "complete" or not self.evaluate("document.documentElement.dataset.ready"):
            assert time.monotonic() < deadline, "the page never became ready"
            time.sleep(0.1)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def press(self, key: str, code: int, text: str | None = None) -> None:
        """A key press as the focused element gets it (``text`` for keys that type, e.g. Enter)."""
        down = {"type": "keyDown", "text": text} if text else {"type": "rawKeyDown"}
        for event in (down, {"type": "keyUp"}):
            self.call("Input.dispatchKeyEvent", key=key, code=key, windowsVirtualKeyCode=code, **event)

    def errors(self) -> list[str]:
        self.evaluate("1")  # flush events that arrived since the last call
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(str(params["exceptionDetails"]))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(str(params.get("args")))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"] + " " + params["entry"].get("url", ""))
        return found

    def screenshot(self, path: Path, width: int, height: int, mobile: bool) -> Path:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=mobile)
        time.sleep(0.3)
        shot = self.call("Page.captureScreenshot", format="png")
        import base64

        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        try:
            self.socket.close()
        finally:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture
def browser(tmp_path):
    chromium = Chromium(tmp_path / "profile")
    yield chromium
    chromium.close()


@pytest.fixture
def artifacts(tmp_path):
    folder = Path(os.environ.get("ADLIGHT_ARTIFACTS", tmp_path / "artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {folder}")
    return folder


@needs_chromium
def test_page_in_chromium_gallery_order_and_slider_reproduce_metrics_json(runs, browser, artifacts):
    run = runs[0]
    report = json.loads((run / "metrics.json").read_text())
    browser.open(run / "report.html")
    assert browser.errors() == []
    cards = browser.evaluate("[...document.querySelectorAll('#gallery button.card')].map(b => [+b.dataset.index, +b.dataset.score])")
    assert sorted(i for i, _ in cards) == list(range(report["n_images"]))
    assert [s for _, s in cards] == sorted((s for _, s in cards), reverse=True)
    # as a keyboard user: the lowest threshold, then one score at a time up to the validation one
    browser.evaluate("document.getElementById('threshold').focus()")
    browser.press("Home", 36)
    assert browser.evaluate("+document.getElementById('stat-recall').dataset.value") == 1.0
    for _ in range(report["n_images"] + 1):
        if float(browser.evaluate("document.getElementById('threshold-value').dataset.value")) >= report["image_threshold"]:
            break
        browser.press("ArrowRight", 39)
    assert float(browser.evaluate("document.getElementById('threshold-value').dataset.value")) == report["image_threshold"]
    for key in ("F1", "precision", "recall"):
        shown = browser.evaluate(f"document.getElementById('stat-{key}').dataset.value")
        assert float(shown) == report[f"image_{key}"], key
    rows = browser.evaluate("document.getElementById('confusion-heading').nextSibling.querySelectorAll('tbody tr').length")
    assert rows == len(report["per_class"])  # hole, scratch, ALL
    # filters: only false positives, then one class
    browser.evaluate("for (const o of ['TP','FN','TN']) document.getElementById('show-' + o).click()")
    visible = browser.evaluate("[...document.querySelectorAll('#gallery li:not([hidden]) .card')].map(b => b.dataset.outcome)")
    assert visible == ["FP"] * report["image_FP"]
    browser.evaluate("for (const o of ['TP','FN','TN']) document.getElementById('show-' + o).click()")
    # the full-size view opens from the keyboard and names the path
    browser.evaluate("document.querySelector('#gallery button.card').focus()")
    browser.press("Enter", 13, "\r")
    assert browser.evaluate("document.getElementById('viewer').open") is True
    assert browser.evaluate("document.querySelector('#viewer .path').textContent").endswith(".png")
    browser.press("Escape", 27)
    assert browser.errors() == []
    browser.evaluate("window.scrollTo(0, 0)")
    for name, width, height, mobile in (("laptop", 1280, 900, False), ("phone", 390, 844, True)):
        shot = browser.screenshot(artifacts / f"report_{name}.png", width, height, mobile)
        assert shot.stat().st_size > 10_000
    assert browser.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")  # no sideways scroll on a phone


@needs_chromium
def test_compare_page_in_chromium(runs, browser, artifacts, tmp_path):
    page = build_compare_page(list(runs), tmp_path / "compare")
    browser.open(page)
    n = json.loads((runs[0] / "metrics.json").read_text())["n_images"]
    assert browser.evaluate("document.querySelectorAll('#gallery li.compare-row').length") == n
    assert browser.evaluate("document.querySelectorAll('#gallery li.compare-row img').length") == 3 * n
    browser.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    time.sleep(0.5)  # the lazily loaded thumbnails at the bottom load now; a broken link would log an error
    assert browser.errors() == []
    browser.evaluate("window.scrollTo(0, 0)")
    browser.screenshot(artifacts / "compare_laptop.png", 1280, 900, False)


@needs_chromium
def test_page_without_maps_threshold_or_anomalies_loads_cleanly(browser, tmp_path):
    # a classifier on class folders: grey images, no maps, no validation threshold, no anomaly
    n = 6
    page = build_run_page(tmp_path / "run", {"image_AUROC": math.nan, "image_threshold": None,
                                             "image_threshold_source": "none"},
                          torch.rand(n), torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long),
                          [f"digits:{i}" for i in range(n)], image_at=lambda i: torch.rand(1, 28, 28))
    browser.open(page)
    assert browser.errors() == []
    assert browser.evaluate("document.querySelectorAll('#gallery .card img').length") == n
    assert browser.evaluate("document.getElementById('to-validation').disabled") is True
    assert browser.evaluate("document.getElementById('stat-F1').dataset.value") == "0"  # 0 / 0, as torchmetrics
