"""A real Jupyter Server: found without flags; a kernel's work keeps the pod, a terminal's output does not."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from wd_support import FakeRunPod, Jupyter, LiveLog, Runner, wait_reply

from reviewkit.watchdog.jupyter import JupyterSignal, discover
from reviewkit.watchdog.signals import BUSY, IDLE, UNKNOWN, parse_time

WATCH = ("--dry-run", "--source", "none", "--check-interval", "0.3", "--idle-limit", "3", "--min-runtime", "0")


def test_servers_are_found_from_their_runtime_files(jupyter: Jupyter) -> None:
    servers = discover(jupyter.runtime_dir)
    assert [(s.url, s.token) for s in servers] == [(jupyter.url, jupyter.token)]
    stale = jupyter.runtime_dir.parent / "stale"
    stale.mkdir(exist_ok=True)
    (stale / "jpserver-999999.json").write_text(json.dumps({"url": "http://127.0.0.1:9/", "token": "t", "pid": 999999}))
    assert discover(stale) == []  # its process is gone
    assert JupyterSignal(directory=stale).read(time.time()).status == IDLE


def test_cpu_only_cell_found_without_flags_blocks_the_stop(
    jupyter: Jupyter, cli: Runner, runpod_api: FakeRunPod
) -> None:
    """No --jupyter-url: the watchdog finds the server; a pandas-like CPU loop (0 % GPU) is work."""
    kernel_id, client = jupyter.start_kernel()
    release = cli.tmp / "release"
    try:
        msg_id = client.execute(
            f"import os\nwhile not os.path.exists({str(release)!r}):\n    sum(i * i for i in range(200_000))\n"
        )
        deadline = time.time() + 10
        while jupyter.kernel_state(kernel_id) != "busy" and time.time() < deadline:
            time.sleep(0.05)
        live = LiveLog(
            cli.start(
                *WATCH,
                "--state-file",
                str(cli.tmp / "state.json"),
                env={"JUPYTER_RUNTIME_DIR": str(jupyter.runtime_dir)},
            )
        )
        live.wait_for(lambda t: t.count("jupyter=busy (1 kernel(s) busy") >= 5)
        assert "would stop" not in live.text
        release.touch()
        wait_reply(client, msg_id)
        live.wait_for("[dry-run] would stop pod")
        err = live.finish()
    finally:
        client.stop_channels()
        jupyter.api("DELETE", f"/api/kernels/{kernel_id}")
    assert jupyter.token not in err
    assert f"Jupyter: servers found in {jupyter.runtime_dir}" in err
    busy_at = err.rindex("jupyter=busy")
    assert err.index("idle (1/3)", busy_at) < err.index("idle (3/3)", busy_at) < err.index("would stop")
    assert runpod_api.calls == []


def _terminal_printing(jupyter: Jupyter, name: str, stop: threading.Event) -> None:
    """Attach to terminal ``name`` like a JupyterLab tab and run ``tail -f``-like output in it."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    async def run() -> None:
        ws_url = jupyter.url.replace("http", "ws") + f"/terminals/websocket/{name}"
        conn = await websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {jupyter.token}"}))
        await conn.write_message(json.dumps(["stdin", "while true; do echo tick; sleep 0.1; done\r"]))
        while not stop.is_set():
            try:
                await asyncio.wait_for(conn.read_message(), timeout=0.5)
            except asyncio.TimeoutError:
                pass
        conn.close()

    asyncio.run(run())


def test_terminal_output_is_not_work(jupyter: Jupyter, cli: Runner) -> None:
    name = jupyter.api("POST", "/api/terminals")["name"]
    stop = threading.Event()
    thread = threading.Thread(target=_terminal_printing, args=(jupyter, name, stop), daemon=True)
    thread.start()
    try:

        def terminal_activity() -> float:
            term = next(t for t in jupyter.api("GET", "/api/terminals") if t["name"] == name)
            return parse_time(term["last_activity"])

        deadline = time.time() + 20
        while time.time() - terminal_activity() > 0.5 and time.time() < deadline:
            time.sleep(0.1)
        assert time.time() - terminal_activity() < 1, "the terminal is not printing"
        # Given by URL and token, as before discovery: the server's terminals are in plain view.
        live = LiveLog(
            cli.start(
                *WATCH,
                "--jupyter-url",
                jupyter.url,
                "--state-file",
                str(cli.tmp / "state.json"),
                env={"JUPYTER_TOKEN": jupyter.token},
            )
        )
        live.wait_for("[dry-run] would stop pod")
        err = live.finish()
        assert time.time() - terminal_activity() < 1, "the terminal stopped printing during the test"
    finally:
        stop.set()
        thread.join(timeout=10)
        jupyter.api("DELETE", f"/api/terminals/{name}")
    assert "jupyter=busy" not in err and "idle (3/3)" in err


def test_polling_does_not_count_as_activity(jupyter: Jupyter) -> None:
    kernel_id, client = jupyter.start_kernel()
    client.stop_channels()
    time.sleep(0.5)  # let the kernel's last messages reach the server
    try:
        signal = JupyterSignal(jupyter.url, jupyter.token)
        before = jupyter.api("GET", "/api/status")["last_activity"]
        kernels_before = {k["id"]: k["last_activity"] for k in jupyter.api("GET", "/api/kernels?no_track_activity=1")}
        readings = [signal.read(since=time.time()) for _ in range(3)]
        assert [r.status for r in readings] == [IDLE] * 3, readings
        assert jupyter.api("GET", "/api/status")["last_activity"] == before
        kernels_after = {k["id"]: k["last_activity"] for k in jupyter.api("GET", "/api/kernels?no_track_activity=1")}
        assert kernels_after == kernels_before
        # The kernel's start is activity after "since" = long ago.
        assert signal.read(since=parse_time(before) - 3600).status == BUSY
    finally:
        jupyter.api("DELETE", f"/api/kernels/{kernel_id}")


def test_wrong_token_or_dead_server_is_unknown(jupyter: Jupyter) -> None:
    wrong = JupyterSignal(jupyter.url, "not-the-token").read(since=time.time())
    assert wrong.status == UNKNOWN and "HTTP 403" in wrong.detail
    assert "not-the-token" not in wrong.detail
    dead = JupyterSignal("http://127.0.0.1:9", None, timeout=1).read(since=time.time())
    assert dead.status == UNKNOWN and "unreachable" in dead.detail


def _watch_with_a_short_grace(cli: Runner, url: str, *extra: str) -> str:
    """The log of a watchdog on ``url`` with a 1 s ``--unknown-grace``, which must end by itself."""
    state = str(cli.tmp / "s.json")
    proc = cli.run(*WATCH, "--jupyter-url", url, *extra, "--unknown-grace", "1", "--state-file", state, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_jupyter_403_is_dropped_after_the_unknown_grace(jupyter: Jupyter, cli: Runner) -> None:
    """A wrong token froze the idle count forever; after --unknown-grace the other signals decide."""
    err = _watch_with_a_short_grace(cli, jupyter.url, "--jupyter-token", "wrong-token-123")
    assert "WARNING - Signal unavailable (jupyter: HTTP 403" in err
    drop = err.index("ERROR - Signal jupyter unknown for")
    assert "dropped from the vote" in err[drop:] and "--jupyter-token" in err[drop:]
    assert drop < err.index("idle (1/3)") < err.index("[dry-run] would stop pod")
    assert "wrong-token-123" not in err


@pytest.fixture
def kernels_api() -> Iterator[dict[str, Any]]:
    """A loopback stand-in for a Jupyter server's REST API, answering ``box["kernels"]``.

    jupyter_server always sends a kernel's ``last_activity``; other servers and
    gateways may not, and a real kernel cannot be held in "starting" without it.
    """
    box: dict[str, Any] = {"kernels": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            body = box["kernels"] if self.path.startswith("/api/kernels") else {"started": "2024-01-01T00:00:00Z"}
            payload = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    box["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield box
    server.shutdown()
    server.server_close()


STUCK = {"id": "5tuck000-1111-2222", "name": "python3", "execution_state": "starting", "connections": 0}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")


def test_a_kernel_starting_since_an_unknown_time_is_unknown_not_busy(kernels_api: dict[str, Any]) -> None:
    signal = JupyterSignal(kernels_api["url"], timeout=2)
    now = time.time()
    for stuck in (STUCK, {**STUCK, "last_activity": None}, {**STUCK, "last_activity": "2024-01-01T09:00:00"}):
        kernels_api["kernels"] = [stuck]
        reading = signal.read(since=now - 60)
        assert reading.status == UNKNOWN, (stuck, reading)
        assert 'kernel 5tuck000 is "starting" since an unknown time' in reading.detail
        assert reading.unknown_keys == ("jupyter kernel 5tuck000",)  # its own unknown-grace clock
    # A start with a time is busy for 5 minutes, then idle (a kernel nobody connected to).
    kernels_api["kernels"] = [{**STUCK, "last_activity": _iso(now - 10)}]
    assert signal.read(since=now).status == BUSY
    kernels_api["kernels"] = [{**STUCK, "last_activity": _iso(now - 3600)}]
    assert signal.read(since=now).status == IDLE
    # Another kernel's work still counts.
    kernels_api["kernels"] = [STUCK, {**STUCK, "id": "b", "execution_state": "busy", "last_activity": _iso(now - 1)}]
    assert signal.read(since=now).status == BUSY


def test_a_stuck_kernel_and_an_unreachable_server_keep_separate_clocks(
    kernels_api: dict[str, Any], tmp_path: Path
) -> None:
    """A server failing now must not inherit the grace a kernel stuck for an hour has used up."""
    kernels_api["kernels"] = [STUCK]
    for name, url in (("jpserver-1.json", kernels_api["url"]), ("jpserver-2.json", "http://127.0.0.1:9")):
        (tmp_path / name).write_text(json.dumps({"url": url + "/", "token": "t", "pid": os.getpid()}))
    reading = JupyterSignal(directory=tmp_path, timeout=1).read(since=time.time())
    assert reading.status == UNKNOWN
    assert reading.unknown_keys == ("jupyter", "jupyter kernel 5tuck000")
    assert "http://127.0.0.1:9/api/status unreachable" in reading.detail and '"starting"' in reading.detail


def test_a_kernel_stuck_starting_is_dropped_after_the_unknown_grace(kernels_api: dict[str, Any], cli: Runner) -> None:
    """It was busy forever, so the pod was never stopped; now it freezes the count until --unknown-grace."""
    kernels_api["kernels"] = [STUCK]
    err = _watch_with_a_short_grace(cli, kernels_api["url"])
    assert "jupyter=busy" not in err
    assert 'WARNING - Signal unavailable (jupyter: kernel 5tuck000 is "starting" since an unknown time' in err
    drop = err.index("ERROR - Signal jupyter kernel 5tuck000 unknown for")
    assert "dropped from the vote" in err[drop:] and 'a kernel stuck in "starting"' in err[drop:]
    assert drop < err.index("idle (1/3)") < err.index("[dry-run] would stop pod")
