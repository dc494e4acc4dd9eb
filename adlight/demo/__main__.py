"""``python -m adlight.demo --exported DIR``: the demo page without importing torch or Lightning."""

import sys

from adlight.demo.command import main
from adlight.errors import AdlightError

if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except AdlightError as error:
        print(f"adlight: error: {error}", file=sys.stderr)
        sys.exit(2)
