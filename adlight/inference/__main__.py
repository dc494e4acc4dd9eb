"""``python -m adlight.inference --exported DIR --data.predict_dir IMAGES``: predict without torch."""

import sys

from adlight.errors import AdlightError
from adlight.inference.command import main

try:
    main(sys.argv[1:])
except AdlightError as error:
    print(f"adlight: error: {error}", file=sys.stderr)
    sys.exit(2)
