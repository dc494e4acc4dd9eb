"""The LitAPI: JSON payloads (from :mod:`.gate`) -> one runtime call per batch -> JSON answers.

LitServe fails every request of a batch when one method raises, so nothing here raises for a
bad request: a request whose image cannot be scored carries its :class:`BadImage` through
``batch``/``predict``/``unbatch`` and is answered with its own 4xx, while the requests batched
with it are scored.
"""

from __future__ import annotations

import base64
import binascii
import signal
from dataclasses import dataclass, field

import litserve as ls
import numpy as np
from fastapi.responses import JSONResponse

from adlight.serve.images import BadImage, decode_image
from adlight.serve.responses import image_response


@dataclass
class Decoded:
    """One request: its images' names and pixels (N x C x H x W uint8), or why it is refused."""

    names: list[str] = field(default_factory=list)
    pixels: np.ndarray | None = None
    outputs: tuple[str, ...] = ()
    error: BadImage | None = None


@dataclass
class Scored:
    names: list[str]
    prediction: dict
    outputs: tuple[str, ...]
    error: BadImage | None = None


class ExportedModelAPI(ls.LitAPI):
    """An ``adlight export`` folder served by LitServe; each worker holds one Inferencer."""

    def __init__(self, exported: str, threads: int | None = None, max_pixels: int = 40_000_000,
                 map_max: float | None = None, max_batch_size: int = 1, batch_timeout: float = 0.0) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/predict")
        self.exported, self.threads = exported, threads
        self.max_pixels, self.map_max = max_pixels, map_max

    def setup(self, device) -> None:
        from adlight.inference import Inferencer  # in the worker process, after the fork

        # Ctrl-C reaches every process of the terminal's group: the server process stops the
        # workers itself, so a worker ignores it rather than die mid-batch with a traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.inferencer = Inferencer(self.exported, threads=self.threads)

    def decode_request(self, request) -> Decoded:
        inferencer = self.inferencer
        decoded = Decoded()
        try:
            decoded.outputs = tuple(request.get("outputs", ()))
            arrays = []
            for item in request["images"]:
                name = str(item.get("name", "image"))
                try:
                    data = base64.b64decode(item["data"], validate=True)
                except (binascii.Error, ValueError, TypeError):
                    raise BadImage(400, f"{name}: the image data is not base64") from None
                arrays.append(decode_image(data, name, inferencer.channels, inferencer.height,
                                           inferencer.width, self.max_pixels))
                decoded.names.append(name)
            decoded.pixels = np.stack(arrays)
        except BadImage as error:
            decoded.error = error
        except (KeyError, TypeError, AttributeError):  # a JSON body posted past the gate
            decoded.error = BadImage(400, "the request holds no image")
        return decoded

    def batch(self, inputs: list[Decoded]) -> list[Decoded]:
        return inputs  # predict concatenates the scorable ones into one runtime call

    def predict(self, x):
        requests = x if isinstance(x, list) else [x]
        good = [r for r in requests if r.error is None]
        scored = []
        if good:
            pixels = np.concatenate([r.pixels for r in good])
            result = self.inferencer.predict(pixels, batch_size=len(pixels))
            start = 0
            for request in good:
                stop = start + len(request.pixels)
                part = {key: value[start:stop] for key, value in result.items()}
                scored.append(Scored(request.names, part, request.outputs))
                start = stop
        answers = iter(scored)
        out = [next(answers) if r.error is None else Scored(r.names, {}, r.outputs, r.error) for r in requests]
        return out if isinstance(x, list) else out[0]

    def unbatch(self, output: list[Scored]) -> list[Scored]:
        return output

    def encode_response(self, output: Scored):
        if output.error is not None:
            return JSONResponse({"error": str(output.error)}, status_code=output.error.status)
        metadata = self.inferencer.metadata
        return {"predictions": [image_response(name, output.prediction, i, metadata, output.outputs,
                                               self.map_max)
                                for i, name in enumerate(output.names)]}
