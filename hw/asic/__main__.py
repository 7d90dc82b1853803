"""``python -m hw.asic``: see :mod:`hw.asic.cli` and docs/asic.md."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
