"""``python -m unimix``: the ``unimix`` command (see :mod:`unimix.cli`)."""

import sys

from unimix.cli import main

if __name__ == "__main__":
    sys.exit(main())
