"""``adlight serve --exported DIR [--port 8000] [--workers 1] [--max_batch_size 8] ...``.

Checks the folder once (a bad one is one line, before any worker starts), then runs LitServe:
``POST /predict``, ``GET /health`` (200 once every worker holds its model), ``GET /metadata``
(the folder's ``metadata.json``) and LitServe's ``GET /info``. Ctrl-C or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from adlight.errors import ConfigError


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="adlight serve", description=__doc__.splitlines()[0])
    parser.add_argument("--exported", required=True, help="the folder adlight export wrote")
    parser.add_argument("--host", default="127.0.0.1",
                        help="127.0.0.1 (this machine only, the default), 0.0.0.0 or :: (every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="inference processes, each with its own model")
    parser.add_argument("--api_servers", type=int, default=1, help="uvicorn processes answering HTTP")
    parser.add_argument("--max_batch_size", type=int, default=4,
                        help="requests scored in one runtime call (1: no dynamic batching)")
    parser.add_argument("--batch_timeout", type=float, default=0.005,
                        help="seconds a batch waits for more requests before it runs")
    parser.add_argument("--threads", type=int, default=None, help="runtime threads per worker")
    parser.add_argument("--max_body_mb", type=float, default=20.0, help="largest request body")
    parser.add_argument("--max_pixels", type=int, default=40_000_000, help="largest image (width x height)")
    parser.add_argument("--max_images", type=int, default=32, help="most images in one request")
    parser.add_argument("--map_max", type=float, default=None,
                        help="map PNG scale (default: twice the pixel threshold)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a request may wait in the queue")
    parser.add_argument("--log_level", default="warning")
    return parser.parse_args(argv)


def _check(options: argparse.Namespace) -> dict:
    """The folder's metadata, and every option a worker would trip over, named now."""
    if options.host not in ("127.0.0.1", "0.0.0.0", "::"):
        raise ConfigError(f"--host must be 127.0.0.1, 0.0.0.0 or ::, got {options.host!r} "
                          "(put a reverse proxy in front for anything else: docs/serving.md)")
    if not 1024 <= options.port <= 65535:
        raise ConfigError(f"--port must be in 1024..65535, got {options.port}")
    for name in ("workers", "api_servers", "max_batch_size", "max_pixels", "max_images"):
        if getattr(options, name) < 1:
            raise ConfigError(f"--{name} must be at least 1, got {getattr(options, name)}")
    if options.batch_timeout < 0 or options.max_body_mb <= 0 or options.timeout <= 0:
        raise ConfigError("--batch_timeout must be >= 0, --max_body_mb and --timeout > 0")
    from adlight.inference import Inferencer

    return Inferencer(options.exported, threads=1).metadata  # loads once: a bad folder fails here


def build_server(options: argparse.Namespace, metadata: dict):
    """The LitServer for ``options`` (not started)."""
    import litserve as ls
    from fastapi.responses import JSONResponse

    from adlight.serve.api import ExportedModelAPI
    from adlight.serve.gate import RequestGate

    api = ExportedModelAPI(str(Path(options.exported).resolve()), options.threads, options.max_pixels,
                           options.map_max, options.max_batch_size, options.batch_timeout)
    gate = (RequestGate, {"path": "/predict", "max_body_bytes": int(options.max_body_mb * 2**20),
                          "max_images": options.max_images})
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=options.workers, timeout=options.timeout,
                          middlewares=[gate], model_metadata={"exported": str(options.exported)})

    async def metadata_endpoint():
        return JSONResponse(metadata)

    server.app.add_api_route("/metadata", metadata_endpoint, methods=["GET"])
    return server


_SERVER_PID = os.getpid()


def _interrupt(signum, frame) -> None:
    if os.getpid() != _SERVER_PID:  # a forked HTTP process inherits this: end it as SIGTERM would
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise KeyboardInterrupt


def main(argv: list[str]) -> None:
    try:
        import litserve  # noqa: F401
    except ImportError:
        raise ConfigError("adlight serve needs LitServe: pip install 'adlight[serve]'") from None
    options = _parse(argv)
    metadata = _check(options)
    server = build_server(options, metadata)
    print(f"adlight serve: {options.exported} on http://{options.host}:{options.port} "
          f"(POST /predict, GET /health, GET /metadata)", flush=True)
    # SIGTERM (docker stop, systemd, a test) shuts down as Ctrl-C does: LitServe then stops its
    # workers; Python's default would end this process alone and leave them running
    signal.signal(signal.SIGTERM, _interrupt)
    server.run(host=options.host, port=options.port, num_api_servers=options.api_servers,
               log_level=options.log_level, generate_client_file=False)


if __name__ == "__main__":  # pragma: no cover
    import sys

    main(sys.argv[1:])
