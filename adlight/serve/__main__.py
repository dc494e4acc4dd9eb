"""``python -m adlight.serve --exported DIR ...``: the server without importing torch or Lightning.

``adlight serve`` replaces itself with this (the ``adlight`` command imports the training stack;
LitServe's workers are spawned processes that re-import the main module, so each would carry it).
"""

import sys

from adlight.errors import AdlightError
from adlight.serve.command import main

if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except AdlightError as error:
        print(f"adlight: error: {error}", file=sys.stderr)
        sys.exit(2)
