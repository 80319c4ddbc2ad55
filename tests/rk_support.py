"""Paths and helpers shared by the test modules (a unique module name: ``conftest`` is
ambiguous once tests/watchdog has its own)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def run_python(code: str, *, env: dict | None = None, timeout: float = 300, cwd: Path | None = None):
    """Run ``code`` in a fresh interpreter of this venv; return the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=str(cwd or ROOT),
    )
