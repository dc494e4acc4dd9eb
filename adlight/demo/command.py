"""``adlight demo --exported DIR [--port 7860]``: the Gradio page on this machine only."""

from __future__ import annotations

import argparse
import os

from adlight.errors import ConfigError


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="adlight demo", description=__doc__.splitlines()[0])
    parser.add_argument("--exported", required=True, help="the folder adlight export wrote")
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1: this machine only (the default)")
    parser.add_argument("--port", type=int, default=7860)
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    options = _parse(argv)
    # no usage statistics and no version check leave the machine
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ConfigError("adlight demo needs Gradio: pip install 'adlight[demo]'") from None
    from adlight.demo.app import build_demo

    demo = build_demo(options.exported)
    demo.launch(server_name=options.host, server_port=options.port, share=False, inbrowser=False,
                show_error=False)
