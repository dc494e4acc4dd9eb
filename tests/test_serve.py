"""``adlight serve`` (adlight/serve): a real server in a subprocess on 127.0.0.1, driven by httpx.

One server for the module (starting LitServe's worker takes seconds): scores and decisions
equal the Inferencer's for the same files, whether sent raw, several in one form, or from many
clients at once (so that dynamic batching mixes them); every bad request gets its 4xx JSON
error without a traceback, also when it is batched with good ones, and the server stays up;
SIGTERM stops it and its workers cleanly. Every loop is bounded.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("litserve")
httpx = pytest.importorskip("httpx")

from adlight.export import export_model  # noqa: E402
from adlight.inference import Inferencer  # noqa: E402
from adlight.models import AutoencoderModel  # noqa: E402
from adlight.nets import FadaeinejadAE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZE = 32


def post(url: str, **arguments):
    """httpx.post, never through a proxy the environment names (the server is on loopback)."""
    arguments.setdefault("timeout", 60)
    with httpx.Client(trust_env=False) as client:
        return client.post(url, **arguments)


def get(url: str, **arguments):
    arguments.setdefault("timeout", 60)
    with httpx.Client(trust_env=False) as client:
        return client.get(url, **arguments)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_images(folder: Path) -> list[Path]:
    """Files of every accepted kind: 8-bit RGB PNG at the model's size and larger, 16-bit grey
    PNG, grey JPEG, BMP, RGB TIFF, a palette PNG."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    paths = []

    def save(name, image):
        path = folder / name
        image.save(path)
        paths.append(path)

    for i in range(3):
        save(f"rgb{i}.png", Image.fromarray((rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8)))
    save("large.png", Image.fromarray((rng.random((48, 60, 3)) * 255).astype(np.uint8)))
    save("grey16.png", Image.fromarray((rng.random((40, 40)) * 65535).astype(np.uint16)))
    save("grey.jpg", Image.fromarray((rng.random((SIZE, SIZE)) * 255).astype(np.uint8)))
    save("colour.bmp", Image.fromarray((rng.random((36, SIZE, 3)) * 255).astype(np.uint8)))
    save("colour.tif", Image.fromarray((rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8)))
    save("palette.png", Image.fromarray((rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8)).convert("P"))
    return paths


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base url, exported folder, image files, the server's process)."""
    root = tmp_path_factory.mktemp("serve")
    torch.manual_seed(0)
    model = AutoencoderModel(FadaeinejadAE(in_channels=3, image_size=SIZE), smoothing_sigma=2.0,
                             image_score="max_smoothed")
    images = write_images(root / "images")
    export_model(model, "onnx", root / "model", SIZE, 3)
    # thresholds between the images' scores, so the decisions split them
    reference = Inferencer(root / "model").predict(images)
    metadata_path = root / "model" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["image_threshold"] = {"value": float(np.median(reference["score"])), "source": "test"}
    metadata["pixel_threshold"] = {"value": float(np.median(reference["anomaly_map"])), "source": "test"}
    metadata_path.write_text(json.dumps(metadata))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "adlight.serve", "--exported", str(root / "model"), "--port", str(port),
         "--max_batch_size", "4", "--batch_timeout", "0.02", "--max_body_mb", "0.05",
         "--max_pixels", "10000", "--max_images", "12", "--threads", "1"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail(f"the server did not become healthy: {process.communicate()[1][-2000:]}")
    yield url, root / "model", images, process
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the server did not stop within 60 s of SIGTERM")
    assert process.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]


def expected(folder: Path, images: list[Path]) -> dict:
    return Inferencer(folder).predict(images)


def test_scores_and_decisions_equal_the_inferencers(served):
    url, folder, images, _ = served
    reference = expected(folder, images)
    metadata = get(f"{url}/metadata").json()
    threshold = metadata["image_threshold"]["value"]
    for i, path in enumerate(images):  # raw bodies, one by one
        answer = post(f"{url}/predict", content=path.read_bytes(), timeout=60)
        assert answer.status_code == 200, answer.text
        (got,) = answer.json()["predictions"]
        assert got["score"] == pytest.approx(float(reference["score"][i]), rel=1e-5, abs=1e-7), path.name
        assert got["anomalous"] == bool(reference["score"][i] >= threshold)
        assert got["threshold"] == threshold and got["threshold_source"] == "test"
    files = [("image", (p.name, p.read_bytes())) for p in images]
    answer = post(f"{url}/predict", files=files, timeout=60)  # all in one multipart form
    assert answer.status_code == 200, answer.text
    got = answer.json()["predictions"]
    assert [g["name"] for g in got] == [p.name for p in images]
    np.testing.assert_allclose([g["score"] for g in got], reference["score"], rtol=1e-5, atol=1e-7)
    assert [g["anomalous"] for g in got] == [bool(s >= threshold) for s in reference["score"]]
    assert 0 < sum(g["anomalous"] for g in got) < len(images)  # the thresholds split them


def test_maps_masks_and_regions_on_request(served):
    url, folder, images, _ = served
    reference = expected(folder, images[:2])
    answer = post(f"{url}/predict", params={"outputs": "anomaly_map,defect_mask,regions"},
                        files=[("image", (p.name, p.read_bytes())) for p in images[:2]], timeout=60)
    assert answer.status_code == 200, answer.text
    for i, got in enumerate(answer.json()["predictions"]):
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(got["defect_mask"]))))
        np.testing.assert_array_equal(mask > 0, reference["defect_mask"][i, 0] > 0)
        amap = np.asarray(Image.open(io.BytesIO(base64.b64decode(got["anomaly_map"]))))
        scale = got["map_max"]
        np.testing.assert_allclose(amap, np.clip(reference["anomaly_map"][i, 0] / scale * 255, 0, 255),
                                   atol=1.01)
        assert sum(r["area"] for r in got["regions"]) == int(mask.astype(bool).sum())
        for region in got["regions"]:
            x0, y0, x1, y1 = region["box"]
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
            assert mask[y0:y1, x0:x1].any()
            polygon = np.asarray(region["polygon"])
            assert polygon[:, 0].min() == x0 - 0.5 and polygon[:, 0].max() == x1 - 0.5
            assert polygon[:, 1].min() == y0 - 0.5 and polygon[:, 1].max() == y1 - 0.5
    plain = post(f"{url}/predict", content=images[0].read_bytes(), timeout=60).json()["predictions"][0]
    assert set(plain) == {"name", "score", "anomalous", "threshold", "threshold_source"}


def test_regions_are_the_masks_components_with_boxes_areas_and_outlines():
    from adlight.serve.responses import regions

    mask = np.zeros((8, 10), np.uint8)
    mask[1:4, 2:5] = 1  # 3 x 3
    mask[6, 8] = 1  # one pixel
    mask[5, 0:2] = mask[6, 2] = 1  # three pixels, joined diagonally (8-connected)
    found = regions(mask)
    assert [r["area"] for r in found] == [9, 3, 1]
    assert [r["box"] for r in found] == [[2, 1, 5, 4], [0, 5, 3, 7], [8, 6, 9, 7]]
    assert found[0]["centroid"] == [3.0, 2.0]
    # the boundary half a pixel outside the pixel centres, corners cut by the 0.5 level
    assert found[0]["polygon"] == [[1.5, 1.0], [2.0, 0.5], [4.0, 0.5], [4.5, 1.0], [4.5, 3.0],
                                   [4.0, 3.5], [2.0, 3.5], [1.5, 3.0]]
    assert found[2]["polygon"] == [[7.5, 6.0], [8.0, 5.5], [8.5, 6.0], [8.0, 6.5]]
    assert regions(np.zeros((4, 4), np.uint8)) == []


def test_many_clients_at_once_all_get_their_own_answers(served):
    url, folder, images, _ = served
    reference = dict(zip(images, expected(folder, images)["score"], strict=True))
    jobs = [images[(i * 7) % len(images)] for i in range(48)]

    def ask(path):
        with httpx.Client(timeout=120, trust_env=False) as client:
            answer = client.post(f"{url}/predict", content=path.read_bytes())
        return path, answer.status_code, answer.json()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(ask, jobs))
    for path, status, body in results:
        assert status == 200, body
        assert body["predictions"][0]["score"] == pytest.approx(float(reference[path]), rel=1e-5, abs=1e-7)


def bad_requests(images: list[Path]) -> list[tuple[str, dict, int, str]]:
    """(what, httpx.post arguments, status, a word the error names)."""
    png = images[0].read_bytes()
    buffer = io.BytesIO()
    Image.new("CMYK", (SIZE, SIZE)).save(buffer, format="JPEG")
    cmyk = buffer.getvalue()
    buffer = io.BytesIO()
    Image.new("RGB", (200, 200)).save(buffer, format="PNG")  # 40 000 pixels > --max_pixels
    huge_image = buffer.getvalue()
    buffer = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE)).save(buffer, format="GIF")
    return [
        ("not an image", {"content": b"hello, this is text"}, 400, "not an image"),
        ("truncated file", {"content": png[: len(png) // 2]}, 400, "truncated"),
        ("wrong channels", {"content": cmyk}, 422, "channels"),
        ("body too large", {"content": os.urandom(80_000)}, 413, "limit"),
        ("too many pixels", {"content": huge_image}, 413, "pixels"),
        ("empty body", {"content": b""}, 400, "empty"),
        ("wrong field name", {"files": [("file", ("a.png", png))]}, 400, "'file'"),
        ("empty file in a form", {"files": [("image", ("a.png", b""))]}, 400, "empty"),
        ("form without an image", {"files": [("outputs", (None, "regions"))]}, 400, "no image"),
        ("too many images", {"files": [("image", ("a.png", png))] * 13}, 413, "images"),
        ("far too many images", {"files": [("image", ("a.png", b"x"))] * 40}, 413, "images"),
        ("unknown output", {"content": png, "params": {"outputs": "heatmap"}}, 400, "heatmap"),
        ("unknown query", {"content": png, "params": {"thresh": "1"}}, 400, "thresh"),
        ("a GIF", {"content": buffer.getvalue()}, 415, "GIF"),
        ("malformed multipart", {"content": b"--xxbroken",
                                 "headers": {"content-type": "multipart/form-data; boundary=xx"}}, 400, "multipart"),
    ]


def test_every_bad_request_gets_its_4xx_and_the_server_stays_up(served):
    url, folder, images, process = served
    for what, arguments, status, word in bad_requests(images):
        answer = post(f"{url}/predict", timeout=60, **arguments)
        assert answer.status_code == status, (what, answer.text)
        assert word in answer.json()["error"], (what, answer.text)
        assert "Traceback" not in answer.text and 'File "' not in answer.text, what
    assert get(f"{url}/health").status_code == 200 and process.poll() is None
    good = post(f"{url}/predict", content=images[1].read_bytes(), timeout=60)
    assert good.status_code == 200


def test_a_bad_request_batched_with_good_ones_fails_alone(served):
    url, folder, images, _ = served
    reference = expected(folder, images[:3])["score"]
    bodies = [(images[i % 3].read_bytes(), reference[i % 3]) if i % 4 else (b"not an image", None)
              for i in range(24)]

    def ask(item):
        body, score = item
        with httpx.Client(timeout=120, trust_env=False) as client:
            return client.post(f"{url}/predict", content=body), score

    with ThreadPoolExecutor(12) as pool:
        for answer, score in pool.map(ask, bodies):
            if score is None:
                assert answer.status_code == 400, answer.text
            else:
                assert answer.status_code == 200, answer.text
                assert answer.json()["predictions"][0]["score"] == pytest.approx(float(score), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("command", [["adlight.serve"], ["adlight", "serve"]], ids=["module", "adlight"])
def test_a_bad_folder_is_one_line_before_any_worker_starts(command, tmp_path):
    done = subprocess.run([sys.executable, "-m", *command, "--exported", str(tmp_path / "nothing")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2
    assert done.stderr.strip().startswith("adlight: error:") and "nothing" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_server_and_the_demo_import_neither_torch_nor_lightning():
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'lightning', 'pytorch_lightning', 'torchvision'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import adlight.serve.api, adlight.serve.command, adlight.serve.gate\n"
        "import adlight.demo.app, adlight.demo.command\n"
        "print('imported')\n")
    done = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0 and done.stdout.strip() == "imported", done.stderr[-2000:]
