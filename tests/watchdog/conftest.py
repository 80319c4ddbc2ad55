"""Fixtures for the watchdog tests; the machinery lives in ``wd_support`` (a unique
module name, so it cannot clash with other test directories' helpers)."""

import sys
from pathlib import Path

# Importable under any pytest import mode (prepend adds this directory; importlib does not).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from wd_support import cli, jupyter, runpod_api  # noqa: E402,F401 - pytest fixtures
