"""One image's prediction -> the JSON the server answers with.

Always: ``score``, ``anomalous`` (``score >= threshold``; ``null`` without a threshold), and the
image threshold with its source (as ``metadata.json`` has them). On request (``outputs``):
``anomaly_map`` and ``defect_mask`` as base64 PNGs, written as ``adlight predict`` writes its map
PNGs (255 * map / scale, the scale twice the pixel threshold unless given), and ``regions``: the
8-connected components of the defect mask with their bounding boxes, areas and outlines.
"""

from __future__ import annotations

import base64
import io
import math

import contourpy
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


#: regions answered per image, the largest first (a speckled mask would make a huge answer)
MAX_REGIONS = 100


def outline_polygon(region: np.ndarray, x0: int, y0: int) -> list[list[float]]:
    """The outer boundary of a 0/1 crop (one region) as [x, y] vertices in image pixels, half a
    pixel outside the region's pixel centres (contourpy's level 0.5), collinear points dropped."""
    lines = contourpy.contour_generator(z=np.pad(region.astype(np.float64), 1),
                                        line_type="Separate").lines(0.5)
    line = max(lines, key=len)[:-1] + [x0 - 1, y0 - 1]  # closed: the last point repeats the first
    turn = np.roll(line, -1, axis=0) - line
    keep = np.any(turn != np.roll(turn, 1, axis=0), axis=1)
    return [[round(float(x), 1), round(float(y), 1)] for x, y in line[keep]]


def regions(mask: np.ndarray) -> list[dict]:
    """The 8-connected regions of a 0/1 H x W mask, largest first (at most :data:`MAX_REGIONS`):
    ``box`` [x0, y0, x1, y1] (x1, y1 exclusive), ``area`` (pixels), ``centroid`` [x, y] and
    ``polygon``, the outer boundary."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    areas = ndimage.sum_labels(mask > 0, labels, index)
    centroids = ndimage.center_of_mass(mask > 0, labels, index)
    slices = ndimage.find_objects(labels)
    found = []
    for k in np.argsort(-areas, kind="stable")[:MAX_REGIONS]:
        rows, cols = slices[k]
        found.append({"box": [int(cols.start), int(rows.start), int(cols.stop), int(rows.stop)],
                      "area": int(areas[k]),
                      "centroid": [round(float(centroids[k][1]), 2), round(float(centroids[k][0]), 2)],
                      "polygon": outline_polygon(labels[rows, cols] == k + 1, cols.start, rows.start)})
    return found


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
