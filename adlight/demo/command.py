"""``adlight demo --exported DIR [--port 7860]``: the Gradio page on this machine only.

``adlight demo --config FILE.yaml --ckpt_path X.ckpt [overrides]`` exports the checkpoint to
ONNX in a temporary folder first (through the export the CLI hands in) and shows that.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable

from adlight.errors import ConfigError


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="adlight demo", description=__doc__.splitlines()[0])
    parser.add_argument("--exported", default=None, help="the folder adlight export wrote")
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1: this machine only (the default)")
    parser.add_argument("--port", type=int, default=7860)
    return parser.parse_known_args(argv)


def main(argv: list[str], export: Callable[[list[str]], object] | None = None) -> None:
    """Run the page; ``export`` (handed in by the CLI) writes an export from ``--config`` /
    ``--ckpt_path`` arguments when there is no ``--exported`` folder."""
    options, rest = _parse(argv)
    if options.exported is None and not rest:
        raise ConfigError("adlight demo needs --exported DIR, or --config FILE.yaml --ckpt_path X.ckpt")
    if options.exported is not None and rest:
        raise ConfigError(f"adlight demo --exported takes no other arguments, got {' '.join(rest)}")
    # no usage statistics and no version check leave the machine
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ConfigError("adlight demo needs Gradio: pip install 'adlight[demo]'") from None
    from adlight.demo.app import build_demo

    with tempfile.TemporaryDirectory(prefix="adlight-demo-") as scratch:
        folder = options.exported
        if folder is None:
            if export is None:
                raise ConfigError("a checkpoint needs the adlight command: adlight demo --config ... --ckpt_path ...")
            folder = os.path.join(scratch, "exported")
            export([*rest, "--format", "onnx", "--out", folder])
        demo = build_demo(folder)
        demo.launch(server_name=options.host, server_port=options.port, share=False, inbrowser=False,
                    show_error=False)
