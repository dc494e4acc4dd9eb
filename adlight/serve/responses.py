"""One image's prediction -> the JSON the server answers with.

Always: ``score``, ``anomalous`` (``score >= threshold``; ``null`` without a threshold), and the
image threshold with its source (as ``metadata.json`` has them). On request (``outputs``):
``anomaly_map`` and ``defect_mask`` as base64 PNGs, written as ``adlight predict`` writes its map
PNGs (255 * map / scale, the scale twice the pixel threshold unless given), and ``regions``: the
8-connected components of the defect mask with their bounding boxes and areas in pixels.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from PIL import Image
from scipy import ndimage

#: what a request may ask for besides the score and the decision
OPTIONAL_OUTPUTS = ("anomaly_map", "defect_mask", "regions")


def png_base64(plane: np.ndarray) -> str:
    """uint8 H x W -> a PNG file, base64."""
    buffer = io.BytesIO()
    Image.fromarray(plane).save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def map_scale(anomaly_map: np.ndarray, pixel_threshold: float | None, map_max: float | None) -> float:
    """The value drawn white: ``map_max``, else twice the pixel threshold (the threshold is
    mid-grey), else the map's own maximum, as :mod:`adlight.prediction_files` does."""
    if map_max:
        return float(map_max)
    if pixel_threshold is not None and math.isfinite(pixel_threshold) and pixel_threshold > 0:
        return 2.0 * float(pixel_threshold)
    return float(anomaly_map.max()) or 1.0


def regions(mask: np.ndarray) -> list[dict]:
    """The 8-connected regions of a 0/1 H x W mask: ``box`` [x0, y0, x1, y1] (x1, y1 exclusive),
    ``area`` (pixels) and ``centroid`` [x, y], largest first."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    areas = ndimage.sum_labels(mask > 0, labels, index)
    centroids = ndimage.center_of_mass(mask > 0, labels, index)
    found = [{"box": [int(s[1].start), int(s[0].start), int(s[1].stop), int(s[0].stop)],
              "area": int(area), "centroid": [round(float(c[1]), 2), round(float(c[0]), 2)]}
             for s, area, c in zip(ndimage.find_objects(labels), areas, centroids, strict=True)]
    return sorted(found, key=lambda r: -r["area"])


def image_response(name: str, prediction: dict, index: int, metadata: dict, outputs: tuple[str, ...],
                   map_max: float | None = None) -> dict:
    """The JSON of image ``index`` of an Inferencer ``prediction``."""
    image_t = metadata.get("image_threshold") or {}
    threshold = image_t.get("value")
    score = float(prediction["score"][index])
    answer = {
        "name": name,
        "score": score,
        "anomalous": None if threshold is None else bool(score >= threshold),
        "threshold": threshold,
        "threshold_source": image_t.get("source"),
    }
    if not outputs:
        return answer
    if "anomaly_map" not in prediction:
        answer["note"] = "this model gives no anomaly map: only the score and the decision"
        return answer
    pixel_t = (metadata.get("pixel_threshold") or {}).get("value")
    amap = prediction["anomaly_map"][index, 0]
    if "anomaly_map" in outputs:
        scale = map_scale(amap, pixel_t, map_max)
        answer["anomaly_map"] = png_base64(np.clip(amap / scale * 255.0, 0, 255).astype(np.uint8))
        answer["map_max"] = scale
    if "defect_mask" in prediction and ("defect_mask" in outputs or "regions" in outputs):
        mask = prediction["defect_mask"][index, 0]
        answer["pixel_threshold"] = pixel_t
        if "defect_mask" in outputs:
            answer["defect_mask"] = png_base64(mask.astype(np.uint8) * 255)
        if "regions" in outputs:
            answer["regions"] = regions(mask)
    elif "defect_mask" in outputs or "regions" in outputs:
        answer["note"] = "the export has no pixel threshold: no defect mask or regions"
    return answer
