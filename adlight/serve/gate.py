"""The ASGI middleware in front of ``POST /predict``: limits, and one payload for every way to send.

A camera station posts either the image file itself as the body (any content type but
``multipart/form-data``) or a multipart form with one or several files in the field ``image`` (or
``images``). Both become the JSON payload the LitAPI decodes (``{"images": [{"name", "data"
(base64)}], "outputs": [...]}``), so the worker sees one shape of request. Everything that can
be refused without decoding an image is refused here with a 4xx JSON ``{"error": ...}``:
a body over the limit (413, before reading it when ``Content-Length`` says so), an empty body,
a malformed form, a field of another name, too many images, an unknown ``outputs`` entry.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs

from starlette.requests import Request

from adlight.serve.responses import OPTIONAL_OUTPUTS

#: form fields that carry images
IMAGE_FIELDS = ("image", "images")


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_outputs(values: list[str]) -> list[str]:
    """``outputs=anomaly_map,regions`` (repeated or comma-separated) -> checked names."""
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in OPTIONAL_OUTPUTS]
    if unknown:
        raise Refused(400, f"unknown outputs {unknown}: choose from {', '.join(OPTIONAL_OUTPUTS)}")
    return names


async def _form_payload(scope, body: bytes, max_images: int) -> tuple[list[dict], list[str]]:
    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        # the body limit already bounds the parts: one over --max_images is enough to refuse
        form = await Request(scope, replay).form(max_files=max_images + 1, max_fields=max_images + 100)
    except Exception as error:  # noqa: BLE001  python-multipart's and starlette's errors alike
        detail = str(getattr(error, "detail", None) or error)
        if detail.startswith("Too many files"):
            raise Refused(413, f"more than {max_images} images in one request (--max_images)") from None
        raise Refused(400, f"malformed multipart body ({detail})") from None
    images, outputs = [], []
    try:
        for field, value in form.multi_items():
            if field == "outputs" and isinstance(value, str):
                outputs.append(value)
            elif field in IMAGE_FIELDS and not isinstance(value, str):
                images.append({"name": value.filename or field,
                               "data": base64.b64encode(await value.read()).decode("ascii")})
            else:
                raise Refused(400, f"unknown form field {field!r}: send images as files in the field "
                                   f"'image' (or 'images') and options in 'outputs'")
    finally:
        await form.close()
    if not images:
        raise Refused(400, "the form holds no image: send files in the field 'image'")
    return images, outputs


class RequestGate:
    """Pure ASGI middleware (no per-request task, unlike Starlette's BaseHTTPMiddleware)."""

    def __init__(self, app, path: str = "/predict", max_body_bytes: int = 20 * 2**20,
                 max_images: int = 32) -> None:
        self.app, self.path = app, path
        self.max_body_bytes, self.max_images = max_body_bytes, max_images

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            payload = await self._payload(scope, receive)
        except Refused as refused:
            await _send_json(send, refused.status, {"error": str(refused)})
            return
        body = json.dumps(payload).encode()
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        sent = False

        async def replay():
            nonlocal sent
            if sent:  # the body was read: anything further is the client going away
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)

    async def _payload(self, scope, receive) -> dict:
        headers = dict(scope["headers"])
        limit = self.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise Refused(413, f"request body is {int(declared)} bytes; the limit is {limit} (--max_body_mb)")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refused(400, "the client went away before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise Refused(413, f"request body is over {limit} bytes, the limit (--max_body_mb)")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if not body:
            raise Refused(400, "empty body: post an image file as the body, or files in the "
                               "multipart field 'image'")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        unknown = sorted(set(query) - {"outputs"})
        if unknown:
            raise Refused(400, f"unknown query parameters {unknown}: the only one is 'outputs'")
        content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
        if content_type.startswith("multipart/form-data"):
            images, form_outputs = await _form_payload(scope, body, self.max_images)
        else:  # the file itself, whatever type the client says (curl --data-binary says url-encoded)
            images, form_outputs = [{"name": "body", "data": base64.b64encode(body).decode("ascii")}], []
        if len(images) > self.max_images:
            raise Refused(413, f"{len(images)} images in one request; the limit is {self.max_images} "
                               "(--max_images)")
        return {"images": images, "outputs": parse_outputs(query.get("outputs", []) + form_outputs)}


async def _send_json(send, status: int, content: dict) -> None:
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
