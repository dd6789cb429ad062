"""``python -m chio_middleware.cli``: the same as the ``chio-middleware`` script."""

from __future__ import annotations

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
