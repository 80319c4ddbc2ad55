"""``reviewkit.serve.run`` ends its process in bounded time whatever the engine does (issue 20, item 2):
a subprocess serving the stand-in engine, hung on purpose, on 127.0.0.1, stopped by its pid.
The same with the real engine (SIGSTOP, SIGKILL of vLLM's engine core) is in test_serve_faults.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from serve_support import ANALYZE

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import os, sys, threading
sys.path.insert(0, {tests!r})
from serve_support import SwitchEngine
from reviewkit.serve import app, run

engine = SwitchEngine(delay=0)
engine.hold.clear()  # every engine call hangs, as vLLM's does once its engine core is stopped
if os.environ["MODE"] == "close-hangs":
    engine.close = threading.Event().wait  # as vLLM's shutdown of a stopped engine core: forever
deadline = {{"batch_timeout_s": float(os.environ["DEADLINE"]), "batch_timeout_per_review_s": 0,
            "liveness_interval_s": 0.1}} if os.environ["DEADLINE"] else {{}}
application = app(engine, api_key="", cache=False, **deadline)
code = run(application, "127.0.0.1", int(os.environ["PORT"]), graceful_timeout_s=4)
print("run returned", code, flush=True)
engine.close()
sys.exit(code)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(mode: str, deadline: float | None, tmp_path: Path) -> tuple[subprocess.Popen, str, Path]:
    port = _free_port()
    log = tmp_path / f"{mode}.log"
    env = {
        **os.environ,
        "MODE": mode,
        "PORT": str(port),
        "DEADLINE": "" if deadline is None else str(deadline),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT.format(tests=str(ROOT / "tests"))],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline_at = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url, log
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline_at, log.read_text()
        time.sleep(0.1)


def _analyze(url: str) -> httpx.Response:
    return httpx.post(url + ANALYZE, json={"restaurant_id": 1, "reviews": [{"content": "zzgood"}]}, timeout=60)


@pytest.fixture
def stopped():
    procs = []
    yield procs.append
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize("mode,code", [("engine-hangs", 0), ("close-hangs", 1)])
def test_sigterm_ends_the_process_within_the_graceful_timeout_whatever_the_engine_does(tmp_path, stopped, mode, code):
    """Today SIGTERM waits for the hung engine call forever (no drain limit), then for its thread."""
    import concurrent.futures

    proc, url, log = _start(mode, deadline=None, tmp_path=tmp_path)  # the default deadline: over a minute
    stopped(proc)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_analyze, url)
        deadline = time.monotonic() + 30
        while httpx.get(url + "/health", timeout=5).json()["requests_in_flight"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == code, log.read_text()
        took = time.monotonic() - signalled
        answer = waiting.result(timeout=10)
    assert took < 4 + 1.5, f"{took:.1f} s after SIGTERM with a graceful timeout of 4 s"
    assert (answer.status_code, answer.headers["Retry-After"]) == (503, "5")  # not a 500, not cut off
    assert "the server is stopping" in answer.json()["detail"]
    if code == 1:
        assert "did not stop within 4 s of SIGTERM" in log.read_text()


def test_a_stuck_engine_ends_the_server_with_status_3(tmp_path, stopped):
    proc, url, log = _start("engine-hangs", deadline=0.5, tmp_path=tmp_path)
    stopped(proc)
    answer = _analyze(url)
    assert (answer.status_code, answer.headers["Retry-After"]) == (503, "5")
    assert "the engine is stuck" in answer.json()["detail"]
    health = httpx.get(url + "/health", timeout=5)
    assert health.status_code == 503 and health.json()["status"] == "engine_dead" and health.json()["busy"] is False
    assert proc.wait(timeout=4 + 3 + 5) == 3, log.read_text()
    assert "run returned 3" in log.read_text()
