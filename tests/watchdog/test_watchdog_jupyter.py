"""A real Jupyter Server: a long cell keeps the pod up; the watchdog's polling does not."""

from __future__ import annotations

import threading
import time

from wd_support import API_KEY, POD_ID, FakeRunPod, Jupyter, Runner, assert_no_key, wait_reply

from reviewkit.watchdog.jupyter import JupyterSignal
from reviewkit.watchdog.signals import BUSY, IDLE, UNKNOWN, parse_time


def test_long_cell_blocks_the_stop_until_it_ends(jupyter: Jupyter, cli: Runner, runpod_api: FakeRunPod) -> None:
    kernel_id, client = jupyter.start_kernel()
    release = cli.tmp / "release"
    lines: list[str] = []
    try:
        # The cell runs until the test releases it (at most 60 s).
        msg_id = client.execute(
            "import os, time\n"
            f"for _ in range(600):\n    if os.path.exists({str(release)!r}): break\n    time.sleep(0.1)\n"
        )
        deadline = time.time() + 10
        while jupyter.kernel_state(kernel_id) != "busy" and time.time() < deadline:
            time.sleep(0.05)
        assert jupyter.kernel_state(kernel_id) == "busy"
        proc = cli.start("--api-key", API_KEY, "--pod-id", POD_ID, "--source", "none",
                         "--jupyter-url", jupyter.url, "--check-interval", "0.3", "--idle-limit", "3",
                         "--min-runtime", "0", "--state-file", str(cli.tmp / "state.json"),
                         env={"JUPYTER_TOKEN": jupyter.token})
        assert proc.stderr is not None
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
        reader.start()
        # Let the watchdog see the running cell for several checks (more than the idle limit).
        deadline = time.time() + 30
        while sum("jupyter=busy (1 kernel(s) busy" in line for line in lines) < 5 and time.time() < deadline:
            time.sleep(0.05)
        assert runpod_api.calls == [], "an API call while the cell was running"
        release.touch()
        wait_reply(client, msg_id)
        cell_ended = time.time()
        proc.wait(timeout=30)
        reader.join(timeout=10)
    finally:
        client.stop_channels()
        jupyter.api("DELETE", f"/api/kernels/{kernel_id}")
    err = "".join(lines)
    assert_no_key(err)
    assert jupyter.token not in err
    assert proc.returncode == 0, err
    assert err.count("jupyter=busy (1 kernel(s) busy") >= 5
    assert runpod_api.ops() == ["pod", "podStop"]
    assert runpod_api.calls[-1].at > cell_ended
    busy_at = err.rindex("jupyter=busy")
    assert err.index("idle (1/3)", busy_at) < err.index("idle (3/3)", busy_at) < err.index("Pod abc123 stop succeeded")


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
