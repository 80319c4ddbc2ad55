"""What ``reviewkit.load()`` prints in a notebook: its status line and nothing else, unless the
user asks for vLLM's log (``VLLM_LOGGING_LEVEL``); an error always shows in full.

A real Jupyter kernel (jupyter_client, no front end) runs the cells, so every stream output is
seen as a notebook would show it: Python's ``sys.stderr`` in the kernel, and the file
descriptors that vLLM's engine processes write to (ipykernel forwards both). The two failing
loads fail early in vLLM's engine process (``VLLM_CPU_OMP_THREADS_BIND`` that is no list of
core ids), so the test starts no full engine; a working load's quiet output is checked by
the browser test on the quickstart notebook.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest
from rk_support import ROOT

from reviewkit.engines.local import is_cpu_build

# What vLLM, Triton and PyTorch print on a CPU load at vLLM's WARNING level (issue 21 item 8).
NOISE = re.compile(r"Triton is installed|\bWARNING\b|Warning:|FutureWarning|Loading safetensors|\[W\d{4} ")
BAD_BIND = "core0"  # not a list of core ids: vLLM's engine process fails to parse it while starting
BAD_BIND_ERROR = "invalid literal for int() with base 10: 'core0'"
# reviewkit's own advice when tcmalloc is missing (REVIEWKIT_TCMALLOC=0 silences it)
REVIEWKIT_ADVICE = re.compile(r"libtcmalloc is not installed: .* set REVIEWKIT_TCMALLOC=0 to silence this\.")


@dataclass
class CellRun:
    streams: list[tuple[str, str]] = field(default_factory=list)  # (stdout|stderr, text) in order
    displays: list[str] = field(default_factory=list)
    error: str | None = None
    error_after_streams: int = 0  # how many stream outputs came before the error

    @property
    def text(self) -> str:
        return "".join(text for _, text in self.streams)


def run_cell(client, code: str, timeout: float = 420, settle: float = 0) -> CellRun:
    """Run ``code``; its outputs until the kernel is idle, and those that come ``settle`` s later."""
    msg_id = client.execute(code)
    run = CellRun()
    idle_at = None
    while True:
        left = timeout if idle_at is None else idle_at + settle - time.monotonic()
        try:
            msg = client.get_iopub_msg(timeout=max(left, 0.01))
        except queue.Empty:
            if idle_at is not None:
                return run
            pytest.fail(f"no output for {timeout} s from {code!r}; so far: {run}")
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            run.streams.append((content["name"], content["text"]))
        elif kind in ("display_data", "execute_result"):
            run.displays.append(str(content["data"].get("text/plain", "")))
        elif kind == "error":
            run.error = f"{content['ename']}: {content['evalue']}"
            run.error_after_streams = len(run.streams)
        elif kind == "status" and content["execution_state"] == "idle":
            idle_at = time.monotonic()


@pytest.fixture
def kernel():
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("VLLM_LOGGING_LEVEL", None)  # a user who set nothing (the test suite sets WARNING)
    # ipykernel forwards what other processes write to the kernel's stdout and stderr to the
    # notebook, except under pytest (it looks for this variable): here it must, as for a user.
    env.pop("PYTEST_CURRENT_TEST", None)
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(ROOT), env=env)
    try:
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=False)


@pytest.mark.own_engine
@pytest.mark.skipif(not is_cpu_build(), reason="the failing loads use vLLM's CPU build's thread binding")
def test_a_load_shows_its_status_only_unless_asked_and_errors_in_full(kernel):
    client = kernel
    setup = run_cell(
        client,
        f"import os, sys, reviewkit\nos.environ['VLLM_CPU_OMP_THREADS_BIND'] = {BAD_BIND!r}\nprint(sys.executable)",
    )
    assert setup.error is None and setup.text.strip() == sys.executable, setup

    # 1. vLLM's engine process fails: its own error shows in full on stderr, before reviewkit's
    #    error, which names it; and nothing else shows.
    failed = run_cell(client, "reviewkit.load('embedded')")
    assert failed.error and failed.error.startswith("EngineLoadError") and BAD_BIND_ERROR in failed.error, failed
    engine_error = [i for i, (name, text) in enumerate(failed.streams) if name == "stderr" and BAD_BIND_ERROR in text]
    assert engine_error and engine_error[0] < failed.error_after_streams, failed
    assert "Traceback (most recent call last)" in failed.text, failed.text[-3000:]
    noise = [line for line in failed.text.splitlines() if NOISE.search(line)]
    assert not noise, noise

    # 2. VLLM_LOGGING_LEVEL brings vLLM's own output back: this process's log records and the
    #    engine process's stderr, the line printed before it configures logging included.
    #    (vLLM's engine process writes to the kernel's own stdout and stderr, whose lines the
    #    kernel may send after the cell's end: they are awaited.)
    loud = run_cell(client, "os.environ['VLLM_LOGGING_LEVEL'] = 'WARNING'\nreviewkit.load('embedded')", settle=2)
    assert loud.error and loud.error.startswith("EngineLoadError") and BAD_BIND_ERROR in loud.text, loud
    # (this process's warnings were said once in the first load: vLLM says some once per process)
    assert re.search(r"\(EngineCore pid=\d+\).*WARNING", loud.text), loud.text[-3000:]
    assert re.search(r"^Triton is installed, but doesn't include CPU backend", loud.text, re.M), loud.text[-3000:]
    # A load that works shows reviewkit's status and nothing else: tests/test_browser.py checks
    # that on the quickstart notebook's load in JupyterLab (no second engine start here).


_ENGINE_LIKE = r"""
import os, sys, time
os.write(2, b"first line\n")
os.write(2, b"Triton is installed, but doesn't include CPU backend. Disabling Triton.\n")
time.sleep(0.5)  # past the end of the with block: vLLM's engine process outlives it
os.write(2, b"\r  Triton is installed, but doesn't include CPU backend. Disabling Triton.  \n")
os.write(2, b"\x1b[0;36m(EngineCore pid=7)\x1b[0;0m \x1b[31mERROR\x1b[0m 12-03 18:50:28 [core.py:1510] failed.\n")
os.write(2, b"Traceback (most recent call last):\nValueError: a real error, Triton is installed\n")
os.write(2, "  its message's second line, no newline: é".encode())
"""
_FILTERED = r"""
import io, os, subprocess, sys
from reviewkit.engines.vllm_output import StderrFilter

if sys.argv[2] == "stream":  # as in Jupyter: sys.stderr is no file descriptor
    sys.stderr = io.StringIO()
with StderrFilter() as engine_stderr:
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
    os.write(2, b"this process, meanwhile\n")
os.write(2, b"this process, after\n")
child.wait()
print(engine_stderr.wait(timeout=10), repr(engine_stderr.last_error()))
if isinstance(sys.stderr, io.StringIO):
    sys.__stderr__.write(sys.stderr.getvalue())
"""


@pytest.mark.parametrize("stderr", ["fd", "stream"])
def test_engine_stderr_loses_only_the_known_benign_line(stderr):
    """What a process started inside the filter writes to stderr, for its whole life, reaches
    this process's stderr less the exact benign line, a terminal's or Jupyter's alike; this
    process's own stderr is its own again after; the last exception is at hand for a message."""
    proc = subprocess.run(
        [sys.executable, "-c", _FILTERED, _ENGINE_LIKE, stderr],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stderr
    error = "ValueError: a real error, Triton is installed\n  its message's second line, no newline: é"
    assert proc.stdout == f"True {error!r}\n"
    engine_lines = [
        "first line",
        "\x1b[0;36m(EngineCore pid=7)\x1b[0;0m \x1b[31mERROR\x1b[0m 12-03 18:50:28 [core.py:1510] failed.",
        "Traceback (most recent call last):",
        *error.splitlines(),
    ]
    lines = proc.stderr.splitlines()
    assert "Disabling Triton." not in proc.stderr
    assert [line for line in lines if line in engine_lines] == engine_lines  # in order
    assert sorted(lines) == sorted([*engine_lines, "this process, meanwhile", "this process, after"])


def test_vllm_output_is_hidden_unless_asked_for():
    from reviewkit.engines.vllm_output import engine_environment, wanted

    assert not wanted({}, {}) and not wanted({"VLLM_LOGGING_LEVEL": ""}, {"dtype": "bfloat16"})
    assert wanted({"VLLM_LOGGING_LEVEL": "WARNING"}, {}) and wanted({"VLLM_LOGGING_LEVEL": "ERROR"}, {})
    assert wanted({"VLLM_LOGGING_CONFIG_PATH": "/etc/log.json"}, {}) and wanted({"VLLM_CONFIGURE_LOGGING": "0"}, {})
    assert wanted({}, {"log_level": "DEBUG"}) and wanted({}, {"logging_config": None})
    # The engine processes' switches never replace the user's own.
    assert engine_environment({}) == {
        "PYTHONWARNINGS": "ignore",
        "TORCH_CPP_LOG_LEVEL": "ERROR",
        "VLLM_LOGGING_STREAM": "ext://sys.stderr",
    }
    mine = {"PYTHONWARNINGS": "default", "VLLM_LOGGING_STREAM": "ext://sys.stdout"}
    assert engine_environment(mine) == {"TORCH_CPP_LOG_LEVEL": "ERROR"}


def test_a_failed_load_names_the_engine_processes_error():
    """The error raised in this process says only that the engine process failed: its own
    exception, when known, goes into the message, and an out-of-memory one gets the fixes."""
    from reviewkit.engines.local import explain_load_failure
    from reviewkit.settings import resolve_settings

    settings = resolve_settings("embedded")
    failed = RuntimeError("Engine core initialization failed. See root cause above. Failed core proc(s): {}")
    bad_bind = str(explain_load_failure(failed, settings, f"ValueError: {BAD_BIND_ERROR}"))
    assert f"failed to start loading 'embedded': ValueError: {BAD_BIND_ERROR}" in bad_bind
    kv = (
        "RuntimeError: Worker failed with error 'Available memory on node 0 (15.23/18.09 GiB) on kv cache "
        "allocation is less than requested memory for kv (4000.0 GiB).'"
    )
    out_of_memory = str(explain_load_failure(failed, settings, kv))
    assert out_of_memory.startswith(f"Out of memory while loading 'embedded' ({kv})")
    assert "VLLM_CPU_KVCACHE_SPACE" in out_of_memory and "gpu_memory_utilization" in out_of_memory
    unknown = str(explain_load_failure(failed, settings))  # vLLM's own log is on the screen: say where
    assert "its own error is printed above" in unknown and "__main__" in unknown
