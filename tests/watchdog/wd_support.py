"""Test support: a fake RunPod GraphQL API, a real Jupyter Server, and a CLI runner.

The watchdog is exercised as users run it: ``python watchdog.py`` in a subprocess,
with the real runpod SDK pointed at the fake API through ``RUNPOD_API_BASE_URL``
(the SDK reads it at every call, in ``runpod.api.graphql.run_graphql_query``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

REPO = Path(__file__).resolve().parents[2]
TRACES = REPO / "tests" / "fixtures" / "traces"
FAKE_NVML = Path(__file__).resolve().parent / "fake_nvml"
API_KEY = "rpa_TESTKEY_5f3c9d2e1b7a"
POD_ID = "abc123"

# Environment the watchdog reads; cleared so the developer's shell cannot leak in.
WATCHDOG_ENV = (
    "RUNPOD_API_KEY",
    "RUNPOD_POD_ID",
    "IDLE_THRESHOLD",
    "CHECK_INTERVAL",
    "IDLE_LIMIT",
    "MIN_RUNTIME",
    "JUPYTER_TOKEN",
    "JUPYTER_URL",
    "HEALTH_URL",
    "REVIEWKIT_ACTIVITY_FILE",
    "WATCHDOG_STATE_FILE",
    "WATCHDOG_PRESET",
    "WATCHDOG_ACTION",
    "WATCHDOG_SOURCE",
    "RUNPOD_API_TIMEOUT",
    "RUNPOD_API_BASE_URL",
    "WATCHDOG_UNKNOWN_GRACE",
    "WATCHDOG_PEAK_HOURS",
    "WATCHDOG_PEAK_PRESET",
    "WATCHDOG_TIMEZONE",
    "JUPYTER_RUNTIME_DIR",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_trace(path: Path, values: list[Any], step: float = 60.0) -> Path:
    """A one-GPU trace: ``values[i]`` at ``i * step`` seconds (None = blank cell)."""
    lines = ["seconds,gpu0"] + [f"{i * step:g},{'' if v is None else v}" for i, v in enumerate(values)]
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- RunPod
@dataclass
class Call:
    op: str
    pod_id: str | None
    authorization: str | None
    query_params: dict[str, list[str]]
    query: str
    at: float


@dataclass
class FakeRunPod:
    """RunPod's GraphQL as far as the watchdog uses it, with failures on demand.

    ``plan[op]`` is a list of modes consumed one per request (then ``ok``):
    ``ok``, ``500`` (HTML body), ``500json`` (a JSON body without ``data``: the SDK
    raises ``KeyError('data')``), ``401``, ``gqlerror``, ``hang`` (no answer for
    ``hang_seconds``), ``slow`` (answers ok after ``hang_seconds``).

    The pod is stateful like RunPod's: ``podStop`` makes it ``EXITED`` (no runtime,
    so no GPU figures), ``podResume`` makes it ``RUNNING`` again. The ``pod`` query
    answers the fields the runpod SDK's own pod query names (``costPerHr``,
    ``gpuCount``, ``uptimeSeconds``, ``desiredStatus``, ``runtime``).
    """

    url: str = ""
    calls: list[Call] = field(default_factory=list)
    plan: dict[str, list[str]] = field(default_factory=dict)
    uptime: float | None = 10_000.0
    gpus: list[float | None] = field(default_factory=lambda: [0.0])
    desired_status: str = "RUNNING"
    cost_per_hr: float = 0.69
    gpu_count: int = 1
    hang_seconds: float = 3.0
    released: threading.Event = field(default_factory=threading.Event)

    def ops(self) -> list[str]:
        return [c.op for c in self.calls]

    def answer(self, op: str, pod_id: str | None) -> tuple[int, bytes]:
        modes = self.plan.get(op) or []
        mode = modes.pop(0) if modes else "ok"
        if mode in ("hang", "slow"):
            self.released.wait(self.hang_seconds)
            mode = "500" if mode == "hang" else "ok"
        if mode == "500":
            return 500, b"<html>Internal Server Error</html>"
        if mode == "500json":
            return 500, b'{"error": "internal error", "status": 500}'
        if mode == "401":
            return 401, b'{"errors":[{"message":"unauthorized"}]}'
        if mode == "gqlerror":
            # Echo the key back, as a careless API might: the watchdog must scrub it.
            body = {"errors": [{"message": f"Something went wrong (key {API_KEY})"}], "data": None}
            return 200, json.dumps(body).encode()
        if op == "podStop":
            self.desired_status = "EXITED"
            data: Any = {"podStop": {"id": pod_id, "desiredStatus": "EXITED"}}
        elif op == "podResume":
            self.desired_status = "RUNNING"
            data = {
                "podResume": {
                    "id": pod_id,
                    "desiredStatus": "RUNNING",
                    "imageName": "img",
                    "env": [],
                    "machineId": "m1",
                    "machine": {"podHostId": "h1"},
                }
            }
        elif op == "podTerminate":
            self.desired_status = "TERMINATED"
            data = {"podTerminate": None}
        else:
            running = self.desired_status == "RUNNING"
            runtime = None
            if self.uptime is not None and running:
                runtime = {
                    "uptimeInSeconds": self.uptime,
                    "gpus": [{"id": f"gpu{i}", "gpuUtilPercent": u} for i, u in enumerate(self.gpus)],
                }
            data = {
                "pod": {
                    "id": pod_id,
                    "desiredStatus": self.desired_status,
                    "costPerHr": self.cost_per_hr,
                    "gpuCount": self.gpu_count,
                    "uptimeSeconds": self.uptime if running else 0,
                    "runtime": runtime,
                }
            }
        return 200, json.dumps({"data": data}).encode()


def _runpod_handler(fake: FakeRunPod) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server API
            parsed = urlparse(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            query = json.loads(body or b"{}").get("query", "")
            op = next(
                (m for m in ("podStop", "podTerminate", "podResume") if m in query),
                "pod" if re.search(r"\bpod\s*\(", query) else "other",
            )
            match = re.search(r'podId:\s*"([^"]*)"', query)
            call = Call(
                op,
                match.group(1) if match else None,
                self.headers.get("Authorization"),
                parse_qs(parsed.query),
                query,
                time.time(),
            )
            if parsed.path != "/graphql":
                call.op = f"wrong-path:{parsed.path}"
            fake.calls.append(call)
            status, payload = fake.answer(call.op, call.pod_id)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def runpod_api() -> Any:
    fake = FakeRunPod()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _runpod_handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    fake.released.set()
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------------- CLI
class Runner:
    """Runs ``python watchdog.py`` with a clean environment and checks the key never leaks."""

    def __init__(self, tmp_path: Path, api: FakeRunPod | None) -> None:
        self.tmp = tmp_path
        self.api = api
        self.started: list[subprocess.Popen[str]] = []
        self.env = {k: v for k, v in os.environ.items() if k not in WATCHDOG_ENV}
        # Jupyter's runtime dir is the test's own: no server of the developer's is found.
        self.env.update(
            XDG_CACHE_HOME=str(tmp_path / "cache"),
            PYTHONUNBUFFERED="1",
            REVIEWKIT_ACTIVITY_FILE=str(tmp_path / "activity.json"),
            JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
        )
        if api is not None:
            self.env["RUNPOD_API_BASE_URL"] = api.url

    def fake_nvml(self, gpus: list[dict[str, Any]], **settings: Any) -> dict[str, str]:
        """Write the fake pynvml's GPUs (re-read at every NVML call); returns the env to use it."""
        self.nvml_file = self.tmp / "nvml.json"
        tmp = self.nvml_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"gpus": gpus, **settings}))
        os.replace(tmp, self.nvml_file)
        path = os.pathsep.join(p for p in (str(FAKE_NVML), self.env.get("PYTHONPATH", "")) if p)
        return {"FAKE_NVML_FILE": str(self.nvml_file), "PYTHONPATH": path}

    def command(self, *args: str) -> list[str]:
        return [sys.executable, str(REPO / "watchdog.py"), *args]

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            self.command(*args),
            cwd=REPO,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started.append(proc)
        return proc

    def close(self) -> None:
        """Kill what a failed test left running (a watchdog never ends by itself)."""
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.command(*args),
            cwd=REPO,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert_no_key(proc.stdout + proc.stderr)
        return proc


def assert_no_key(text: str) -> None:
    assert API_KEY not in text, "the API key leaked into the output"


@pytest.fixture
def cli(tmp_path: Path, runpod_api: FakeRunPod) -> Any:
    runner = Runner(tmp_path, runpod_api)
    yield runner
    runner.close()


# --------------------------------------------------------------------------- Jupyter
class Jupyter:
    """A real Jupyter Server on 127.0.0.1 with a token and a throwaway root dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.token = "jtok-" + os.urandom(6).hex()
        self.url = f"http://127.0.0.1:{self.port}"
        self.runtime_dir = root / "runtime"
        env = {
            **os.environ,
            "JUPYTER_RUNTIME_DIR": str(self.runtime_dir),
            "JUPYTER_CONFIG_DIR": str(root / "config"),
            "JUPYTER_DATA_DIR": str(root / "data"),
            "JUPYTER_PLATFORM_DIRS": "1",
        }
        (root / "notebooks").mkdir(parents=True, exist_ok=True)
        self.log = open(root / "jupyter.log", "w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter_server",
                f"--ServerApp.port={self.port}",
                "--ServerApp.ip=127.0.0.1",
                "--ServerApp.open_browser=False",
                "--ServerApp.port_retries=0",
                "--allow-root",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={root / 'notebooks'}",
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while True:
            try:
                self.api("GET", "/api/status")
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError(
                        "jupyter server did not start: " + (root / "jupyter.log").read_text()[-2000:]
                    ) from None
                time.sleep(0.2)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else None

    def kernel_state(self, kernel_id: str) -> str:
        kernels = self.api("GET", "/api/kernels?no_track_activity=1")
        return next(k["execution_state"] for k in kernels if k["id"] == kernel_id)

    def start_kernel(self) -> tuple[str, Any]:
        """A kernel started over REST, and a jupyter_client connected to it."""
        from jupyter_client import BlockingKernelClient

        kernel_id = self.api("POST", "/api/kernels", {"name": "python3"})["id"]
        client = BlockingKernelClient(connection_file=str(self.runtime_dir / f"kernel-{kernel_id}.json"))
        client.load_connection_file()
        # A heartbeat unanswered for 1 s (jupyter_client's default) reads as a dead kernel,
        # which a kernel still importing on a loaded 2-core machine can miss.
        client.hb_channel.time_to_dead = 5.0
        client.start_channels()
        client.wait_for_ready(timeout=60)
        # An executed statement's status messages move the server's view of the
        # kernel from "starting" to "idle" (what a notebook front end's first cell does).
        wait_reply(client, client.execute("pass"))
        deadline = time.time() + 30
        while self.kernel_state(kernel_id) != "idle" and time.time() < deadline:
            time.sleep(0.1)
        return kernel_id, client

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def wait_reply(client: Any, msg_id: str, timeout: float = 30) -> dict[str, Any]:
    """The shell reply to ``msg_id`` (skipping stray replies, e.g. a second kernel_info)."""
    deadline = time.time() + timeout
    while True:
        reply = client.get_shell_msg(timeout=max(0.1, deadline - time.time()))
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply


@pytest.fixture(scope="session")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("jupyter_server")
    server = Jupyter(tmp_path_factory.mktemp("jupyter"))
    yield server
    server.close()


# --------------------------------------------------------------------------- live log
class LiveLog:
    """The stderr of a running watchdog, collected line by line by a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=lambda: self.lines.extend(iter(proc.stderr.readline, "")), daemon=True)
        self._thread.start()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, predicate: Any, timeout: float = 30) -> None:
        """Wait until ``predicate(text)`` (a str: that it occurs ``1`` time) holds."""
        check = (lambda t: predicate in t) if isinstance(predicate, str) else predicate
        deadline = time.time() + timeout
        while not check(self.text):
            if time.time() > deadline or (self.proc.poll() is not None and not self._thread.is_alive()):
                raise AssertionError(f"not seen within {timeout}s: {predicate!r}\n{self.text[-3000:]}")
            time.sleep(0.02)

    def finish(self, timeout: float = 30) -> str:
        """Wait for the process to end (SIGTERM first if it still runs) and return the log."""
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=timeout)
        self._thread.join(timeout=10)
        text = self.text
        assert_no_key(text)
        return text
