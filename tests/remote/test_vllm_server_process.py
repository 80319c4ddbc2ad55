"""reviewkit.vllm_server's process handling, on a stand-in process tree (no engine).

``stop()`` must leave nothing behind when the server ignores SIGTERM (a hung vLLM server,
whose engine process would otherwise keep its memory), and ``start_server`` must not leak
the descriptor of its temporary log file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from reviewkit import vllm_server

# A "server" that ignores SIGTERM and starts an "engine process" that ignores it too.
TREE = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])  # SIG_IGN is inherited
print(child.pid, flush=True)
time.sleep(300)
"""


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_stop_kills_the_whole_process_group_when_the_server_ignores_sigterm(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True, start_new_session=True
    )  # as start_server starts the real one
    child = int(process.stdout.readline())
    process.stdout.close()
    server = vllm_server.LocalServer(process, "http://127.0.0.1:9/v1", 0.0, tmp_path / "server.log")
    try:
        assert alive(child) and os.getpgid(child) == process.pid
        started = time.perf_counter()
        server.stop(timeout=1.0)
        assert process.poll() is not None and time.perf_counter() - started < 10
        assert not alive(child)  # the engine process went with the server
        assert vllm_server.group_members(process.pid) == []
        server.stop(timeout=1.0)  # a second stop is a no-op
    finally:
        for pid in (child, process.pid):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_start_server_leaks_no_descriptor_for_its_log(monkeypatch, tmp_path):
    def failing_command(model_path, **_):  # a server that exits at once
        return [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ)

    monkeypatch.setattr(vllm_server, "server_command", failing_command)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the log file's folder
    for _ in range(3):
        with pytest.raises(RuntimeError, match="exited with code 3"):
            vllm_server.start_server(str(tmp_path / "model"), timeout=30)
    logs = {str(p) for p in tmp_path.glob("vllm-server-*.log")}
    assert len(logs) == 3  # the logs stay, for reading
    open_files = set()
    for fd in os.listdir("/proc/self/fd"):  # other threads open and close their own meanwhile
        try:
            open_files.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    assert not logs & open_files, "a log file is still open"
