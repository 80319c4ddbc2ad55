"""``python -m reviewkit`` is the ``reviewkit`` command."""

import sys

from reviewkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
