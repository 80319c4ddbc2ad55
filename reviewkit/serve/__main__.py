"""``python -m reviewkit.serve [options]``: the same as ``reviewkit serve [options]``."""

import sys

from reviewkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
