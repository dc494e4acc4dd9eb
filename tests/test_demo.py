"""``adlight demo`` (adlight/demo): the decisions and flips it shows, and the page in Chromium.

The page test starts the demo in a subprocess on 127.0.0.1, opens it in headless Chromium over
the DevTools protocol (as tests/test_report_page.py does), uploads an image through the file
input, reads its score from the page (equal to the Inferencer's) and moves the threshold slider
above it: the image flips to normal and the page says so. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_report_page import CHROMIUM, Chromium

from adlight.demo.app import summary, table_rows
from adlight.export import export_model
from adlight.inference import Inferencer
from adlight.models import AutoencoderModel
from adlight.nets import FadaeinejadAE

REPO = Path(__file__).resolve().parents[1]


def test_rows_say_which_images_flip_against_the_exported_threshold():
    scored = [{"name": "a.png", "score": 0.2}, {"name": "b.png", "score": 0.6}]
    rows = table_rows(scored, 0.5, 0.1)
    assert [r[2] for r in rows] == ["normal", "anomalous"]
    assert [r[3] for r in rows] == ["anomalous", "anomalous"]
    assert [r[4] for r in rows] == ["yes", ""]
    assert summary(scored, 0.5, 0.1).splitlines()[-1] == "1 of 2 images flip against the exported threshold 0.1"
    assert [r[2] for r in table_rows(scored, None, None)] == ["no threshold"] * 2


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_the_page_scores_an_upload_and_the_slider_flips_it(tmp_path):
    pytest.importorskip("gradio")
    torch.manual_seed(0)
    model = AutoencoderModel(FadaeinejadAE(in_channels=3, image_size=32), smoothing_sigma=2.0,
                             image_score="max_smoothed")
    export_model(model, "onnx", tmp_path / "model", 32, 3)
    image = tmp_path / "part.png"
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(image)
    score = float(Inferencer(tmp_path / "model").predict([image])["score"][0])
    metadata_path = tmp_path / "model" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())  # a threshold below the score: anomalous
    metadata["image_threshold"] = {"value": score / 2, "source": "test"}
    metadata_path.write_text(json.dumps(metadata))

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "-m", "adlight.demo", "--exported", str(tmp_path / "model"),
                               "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    browser = None
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the demo did not start"
            try:
                if urllib.request.urlopen(url, timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        browser = Chromium(tmp_path / "profile")
        browser.call("Page.navigate", url=url)

        def wait_for(expression: str, what: str, seconds: float = 120):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                value = browser.evaluate(expression)
                if value:
                    return value
                time.sleep(0.25)
            raise AssertionError(f"the page never showed {what}")

        wait_for("!!document.querySelector('#files input[type=file]')", "the file input")
        root = browser.call("DOM.getDocument", depth=-1, pierce=True)["root"]["nodeId"]
        node = browser.call("DOM.querySelector", nodeId=root, selector="#files input[type=file]")["nodeId"]
        browser.call("DOM.setFileInputFiles", files=[str(image)], nodeId=node)
        text = wait_for("(document.querySelector('#scores textarea') || {}).value", "a score")
        line = text.splitlines()[0]
        assert line.startswith("part.png: score ") and line.endswith("anomalous"), text
        assert float(line.split("score ")[1].split(",")[0]) == pytest.approx(score, rel=1e-5)
        assert "0 of 1 images flip" in text

        above = score * 1.1  # below the slider's maximum (1.25 x the highest score)
        browser.evaluate(f"""(() => {{
            const input = document.querySelector('#threshold input[type=range]');
            input.value = {above};
            input.dispatchEvent(new Event('input', {{bubbles: true}}));
            input.dispatchEvent(new Event('change', {{bubbles: true}}));
        }})()""")
        text = wait_for("((document.querySelector('#scores textarea') || {}).value || '').includes('1 of 1') "
                        "&& document.querySelector('#scores textarea').value", "the flip")
        assert text.splitlines()[0].endswith("normal"), text
    finally:
        if browser is not None:
            browser.close()
        server.terminate()
        server.wait(timeout=60)


def test_on_a_checkpoint_the_demo_exports_it_first_through_the_export_it_is_handed(tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    import adlight.demo.app as app
    from adlight.demo.command import main
    from adlight.errors import ConfigError

    launched, exported = [], []

    class Page:
        def __init__(self, folder):
            self.folder = folder

        def launch(self, **options):
            assert (Path(self.folder) / "metadata.json").is_file()  # the export is there while it runs
            launched.append(options)

    def export(args):
        exported.append(args)
        export_model(AutoencoderModel(FadaeinejadAE(in_channels=3, image_size=32)), "onnx",
                     args[args.index("--out") + 1], 32, 3)

    monkeypatch.setattr(app, "build_demo", Page)
    main(["--config", "x.yaml", "--ckpt_path", "m.ckpt", "--port", "7999"], export=export)
    assert exported[0][:4] == ["--config", "x.yaml", "--ckpt_path", "m.ckpt"]
    assert exported[0][4:6] == ["--format", "onnx"]
    assert launched == [{"server_name": "127.0.0.1", "server_port": 7999, "share": False, "inbrowser": False,
                         "show_error": False}]
    with pytest.raises(ConfigError, match="--exported DIR"):
        main([])
    with pytest.raises(ConfigError, match="no other arguments"):
        main(["--exported", str(tmp_path), "--ckpt_path", "m.ckpt"])
