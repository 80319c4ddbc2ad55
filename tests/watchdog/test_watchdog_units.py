"""Unit tests: policy, state file, activity file, signals, traces, simulation."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from wd_support import TRACES, write_trace

from reviewkit import activity
from reviewkit.atomicfile import write_json
from reviewkit.watchdog.gpu import GpuSignal
from reviewkit.watchdog.policy import Decision, IdlePolicy, backoff_delay, combine, step
from reviewkit.watchdog.signals import BUSY, IDLE, UNKNOWN, ActivityFileSignal, HealthSignal, Reading, parse_time
from reviewkit.watchdog.simulate import AFTER_STOP, simulate
from reviewkit.watchdog.state import WatchdogState, load_state, save_state
from reviewkit.watchdog.trace import TraceEnded, TraceFormatError, TraceReader

LOG = logging.getLogger("test.watchdog")


def r(status: str, name: str = "x") -> Reading:
    return Reading(name, status, status)


# ----------------------------------------------------------------------------- policy
def test_busy_beats_unknown_beats_idle() -> None:
    assert combine([r(IDLE), r(UNKNOWN), r(BUSY, "gpu")]) == (BUSY, ("gpu: busy",))
    assert combine([r(IDLE), r(UNKNOWN, "jupyter")])[0] == UNKNOWN
    assert combine([r(IDLE), r(IDLE)]) == (IDLE, ())
    assert combine([])[0] == UNKNOWN


def test_step_counts_resets_freezes_and_asks_runtime_only_at_limit() -> None:
    policy = IdlePolicy(idle_threshold=5, check_interval=60, idle_limit=3, min_runtime=600)
    asked: list[int] = []

    def runtime() -> float:
        asked.append(1)
        return 700.0

    s = step(policy, 0, [r(IDLE)], runtime)
    assert (s.idle_count, s.decision) == (1, Decision.IDLE)
    s = step(policy, s.idle_count, [r(UNKNOWN)], runtime)
    assert (s.idle_count, s.decision) == (1, Decision.UNKNOWN)
    s = step(policy, 2, [r(BUSY), r(UNKNOWN)], runtime)
    assert (s.idle_count, s.decision) == (0, Decision.BUSY)
    assert step(policy, 1, [r(IDLE)], runtime).decision == Decision.IDLE
    assert asked == []
    assert step(policy, 2, [r(IDLE)], runtime).decision == Decision.STOP
    assert step(policy, 2, [r(IDLE)], 599.0).decision == Decision.WAIT_RUNTIME
    assert step(policy, 2, [r(IDLE)], 600.0).decision == Decision.STOP


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_delay(n, 60) for n in range(6)] == [0, 60, 120, 240, 480, 900]
    assert backoff_delay(3, 0.2) == 0.8


def test_backoff_does_not_overflow_after_many_failures() -> None:
    """A day-long API outage at one check a minute is well over 1,024 failures."""
    assert backoff_delay(1025, 60) == 900
    assert backoff_delay(10**6, 0.1) == 900
    assert backoff_delay(5000, 3600) == 3600  # an interval above the cap is the delay


# ----------------------------------------------------------------------------- state
def test_state_roundtrip_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    state = WatchdogState(pod_id="p", first_start=100.0, last_check=150.0, idle_count=2)
    save_state(path, state)
    assert json.loads(path.read_text())["idle_count"] == 2
    assert load_state(path, pod_id="p", clock="wall", now=160.0, interval=60, log=LOG) == state
    assert os.listdir(path.parent) == ["state.json"]


def test_state_from_an_earlier_session_or_corrupt_is_fresh(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    save_state(path, WatchdogState(pod_id="p", first_start=0.0, last_check=10.0, idle_count=4))
    fresh = load_state(path, pod_id="p", clock="wall", now=10.0 + 7200, interval=60, log=LOG)
    assert fresh.idle_count == 0 and fresh.first_start == 7210.0
    for junk in ("", "[]", '{"version": 1, "idle_count": -3}', '{"version": 2}', "\x00\x01"):
        path.write_text(junk)
        with caplog.at_level(logging.WARNING, logger=LOG.name):
            assert load_state(path, pod_id="p", clock="wall", now=5.0, interval=60, log=LOG).idle_count == 0
        assert "corrupt" in caplog.text
        caplog.clear()


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    """The one atomic JSON writer (state file and activity file): all or nothing, no leftovers."""
    path = tmp_path / "state.json"
    save_state(path, WatchdogState(pod_id="p", idle_count=3))
    with pytest.raises(TypeError):
        write_json(path, {"idle_count": 4, "oops": object()})  # fails half-way through the JSON
    assert json.loads(path.read_text())["idle_count"] == 3
    assert os.listdir(tmp_path) == ["state.json"]


# ----------------------------------------------------------------------------- activity
@pytest.fixture
def activity_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "act" / "activity.json"
    monkeypatch.setenv(activity.ENV_VAR, str(path))
    return path


def test_activity_path_default_respects_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(activity.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert activity.activity_path() == tmp_path / "reviewkit" / "activity.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert activity.activity_path() == Path.home() / ".cache" / "reviewkit" / "activity.json"


def test_working_writes_busy_then_idle_and_nests(activity_file: Path) -> None:
    assert activity.read_activity() is None
    with activity.working("analyze"):
        busy = activity.read_activity()
        assert busy is not None
        assert busy["state"] == "busy" and busy["pid"] == os.getpid() and busy["label"] == "analyze"
        with activity.working("inner"):
            assert activity.read_activity()["since"] == busy["since"]
        assert activity.read_activity()["state"] == "busy"  # outer block still open
    idle = activity.read_activity()
    assert idle["state"] == "idle" and idle["updated"] >= busy["updated"]


def test_working_from_threads_and_heartbeat(activity_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(activity, "REFRESH_SECONDS", 0.05)
    gate = threading.Event()

    def work() -> None:
        with activity.working():
            gate.wait(5)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    first = activity.read_activity()["updated"]
    deadline = time.time() + 10
    while activity.read_activity()["updated"] == first and time.time() < deadline:
        time.sleep(0.02)
    assert activity.read_activity()["updated"] > first  # heartbeat refreshes
    assert activity.read_activity()["state"] == "busy"
    gate.set()
    for t in threads:
        t.join()
    assert activity.read_activity()["state"] == "idle"


def test_working_survives_unwritable_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An unwritable activity file never breaks the analysis: one warning, nothing left open."""
    monkeypatch.setattr(activity, "REFRESH_SECONDS", 0.02)
    blocker = tmp_path / "file"  # a file where the folder should be: unwritable even for root
    blocker.write_text("")
    bad = blocker / "activity.json"
    monkeypatch.setenv(activity.ENV_VAR, str(bad))
    ran = []
    with caplog.at_level(logging.WARNING, logger=activity.__name__):
        with activity.working():
            with activity.working("inner"):
                time.sleep(0.3)  # heartbeats, each failing
            ran.append("outer")
        with activity.working():  # the same path again: no second warning
            ran.append("again")
        monkeypatch.setenv(activity.ENV_VAR, str(blocker / "other.json"))
        with activity.working():  # another unwritable path is worth its own warning
            ran.append("other")
    assert ran == ["outer", "again", "other"]
    warnings = [rec.getMessage() for rec in caplog.records if rec.name == activity.__name__]
    assert len(warnings) == 2, warnings
    assert f"reviewkit activity file {bad} not writable" in warnings[0]
    assert f"reviewkit activity file {blocker / 'other.json'} not writable" in warnings[1]
    assert os.listdir(tmp_path) == ["file"] and blocker.read_text() == ""  # no temporary file left
    deadline = time.time() + 5
    while any(t.name == "reviewkit-activity" for t in threading.enumerate()) and time.time() < deadline:
        time.sleep(0.02)
    assert not any(t.name == "reviewkit-activity" for t in threading.enumerate()), "heartbeat still running"
    # Not left marked busy: the next block (a writable path) writes busy, then idle.
    good = tmp_path / "good" / "activity.json"
    monkeypatch.setenv(activity.ENV_VAR, str(good))
    with activity.working():
        assert activity.read_activity()["state"] == "busy"
    assert activity.read_activity()["state"] == "idle"


def test_activity_module_imports_only_stdlib() -> None:
    heavy = "('numpy', 'pandas', 'vllm', 'torch', 'runpod')"
    code = f"import sys, reviewkit.activity; print(sorted(m for m in sys.modules if m.startswith({heavy})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _write(path: Path, record: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record if isinstance(record, str) else json.dumps(record))


def test_activity_signal_semantics(activity_file: Path) -> None:
    signal = ActivityFileSignal()
    now = time.time()
    assert signal.read(now).status == IDLE  # no file: reviewkit never ran
    _write(activity_file, {"state": "busy", "pid": os.getpid(), "since": now - 500, "updated": now - 1})
    assert signal.read(now).status == BUSY
    _write(activity_file, {"state": "busy", "pid": os.getpid(), "since": now - 500, "updated": now - 100})
    stale = signal.read(now)
    assert (stale.status, stale.warn) == (IDLE, True) and "heartbeat" in stale.detail
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write(activity_file, {"state": "busy", "pid": dead.pid, "since": now - 5, "updated": now - 2})
    gone = signal.read(now)
    assert gone.status == IDLE and gone.warn and f"pid {dead.pid} is gone" in gone.detail
    assert signal.read(now - 10).status == BUSY  # ... but it did work after the previous check
    _write(activity_file, {"state": "idle", "updated": now - 5})
    assert signal.read(now - 60).status == BUSY  # finished since the previous check
    assert signal.read(now).status == IDLE
    _write(activity_file, "{half")
    assert signal.read(now).status == UNKNOWN


# ----------------------------------------------------------------------------- health
@pytest.fixture
def health() -> Iterator[tuple[str, dict[str, Any]]]:
    box: dict[str, Any] = {"status": 200, "body": {}}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            payload = json.dumps(box["body"]).encode()
            self.send_response(box["status"])
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/health", box
    server.shutdown()
    server.server_close()


def test_health_signal(health: tuple[str, dict[str, Any]]) -> None:
    url, box = health
    signal = HealthSignal(url, timeout=2)
    now = time.time()
    iso_recent = datetime.fromtimestamp(now - 5, timezone.utc).isoformat().replace("+00:00", "Z")
    cases = [
        ({"busy": True}, BUSY),
        ({"busy": False}, IDLE),
        ({"status": "healthy", "last_activity": now - 5}, BUSY),
        ({"last_activity": now - 500}, IDLE),
        ({"busy": False, "last_activity": iso_recent}, BUSY),
        ({"last_activity": "2024-01-01T12:00:00Z"}, IDLE),
        ({"status": "healthy"}, UNKNOWN),
        ({"last_activity": "yesterday"}, UNKNOWN),
        ([1, 2], UNKNOWN),
    ]
    for body, expected in cases:
        box["body"] = body
        assert signal.read(since=now - 60).status == expected, body
    box.update(status=500, body={"busy": False})
    assert signal.read(since=now).status == UNKNOWN
    # reviewkit serve with a dead engine: 503, JSON, not busy (it exits to be restarted): idle, not unknown.
    box.update(status=503, body={"status": "engine_dead", "busy": False, "last_activity": now - 500})
    assert signal.read(since=now).status == IDLE
    box.update(status=503, body="Service Unavailable")  # uvicorn's own 503 (connection limit): no answer
    assert signal.read(since=now).status == UNKNOWN
    assert HealthSignal("http://127.0.0.1:9/health", timeout=1).read(since=now).status == UNKNOWN


def test_parse_time() -> None:
    assert parse_time(1700000000) == 1700000000.0
    assert parse_time("1700000000.5") == 1700000000.5
    assert parse_time("2024-01-01T00:00:00Z") == parse_time("2024-01-01T09:00:00+09:00") == 1704067200.0
    with pytest.raises(ValueError):
        parse_time(True)
    with pytest.raises(ValueError, match="milliseconds"):
        parse_time(1700000000000)
    with pytest.raises(ValueError, match="no time zone"):
        parse_time("2024-01-01T09:00:00")


def test_impossible_times_are_unknown_with_a_warning(health: tuple[str, dict[str, Any]], activity_file: Path) -> None:
    """A future, millisecond or naive-local time must not read as "busy for hours"."""
    url, box = health
    now = time.time()
    seoul_naive = datetime.fromtimestamp(now + 9 * 3600, timezone.utc).replace(tzinfo=None).isoformat()
    cases = {"in the future": now + 3600, "milliseconds": now * 1000, "no time zone": seoul_naive}
    for why, stamp in cases.items():
        box["body"] = {"last_activity": stamp}
        reading = HealthSignal(url, timeout=2).read(since=now - 60)
        assert (reading.status, reading.warn) == (UNKNOWN, True), (why, reading)
        assert why in reading.detail
        _write(activity_file, {"state": "busy", "pid": os.getpid(), "since": now, "updated": stamp})
        reading = ActivityFileSignal().read(now - 60)
        assert (reading.status, reading.warn) == (UNKNOWN, True), (why, reading)
        assert why in reading.detail
    box["body"] = {"last_activity": now + 30}  # small clock skew is fine
    assert HealthSignal(url, timeout=2).read(since=now - 60).status == BUSY


# ----------------------------------------------------------------------------- traces
def test_trace_reader_and_errors(tmp_path: Path) -> None:
    reader = TraceReader(TRACES / "multi_gpu.csv")
    assert reader.columns == ["gpu0", "gpu1", "gpu2", "gpu3"]
    assert reader.next_time() == 0 and len(reader.read()) == 4 and reader.next_time() == 30
    reader.position = len(reader.rows)
    with pytest.raises(TraceEnded):
        reader.read()
    bad = {
        "no_seconds.csv": "time,gpu0\n0,1\n",
        "only_seconds.csv": "seconds\n0\n",
        "backwards.csv": "seconds,gpu0\n60,1\n0,1\n",
        "percent.csv": "seconds,gpu0\n0,150\n",
        "text.csv": "seconds,gpu0\n0,busy\n",
        "cells.csv": "seconds,gpu0\n0,1,2\n",
        "empty.csv": "",
        "header_only.csv": "seconds,gpu0\n",
    }
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(TraceFormatError, match=name):
            TraceReader(tmp_path / name)


def test_blank_cell_is_an_unreadable_gpu(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "t.csv", [0, None, 0])
    gpu = GpuSignal(TraceReader(trace), 5)
    assert [gpu.read().status for _ in range(3)] == [IDLE, UNKNOWN, IDLE]


def test_one_unreadable_gpu_leaves_the_others_counting(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("seconds,gpu0,gpu1\n0,90,\n60,1,\n120,,\n")
    gpu = GpuSignal(TraceReader(path), 5)
    busy, idle_part, none = (gpu.read() for _ in range(3))
    assert (busy.status, busy.values) == (BUSY, (90.0,))  # gpu0 works: busy, whatever gpu1 says
    assert (idle_part.status, idle_part.values, idle_part.parts) == (UNKNOWN, (1.0,), ("gpu1",))
    assert idle_part.readable and idle_part.unknown_keys == ("gpu1",)
    assert (none.status, none.readable) == (UNKNOWN, False)


# ----------------------------------------------------------------------------- simulate
def test_simulate_timeline_stop_and_billing(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "t.csv", [90, 90, 1, 2, None, 3, 80, 0, 0, 0, 0, 0, 0])
    result = simulate(trace, idle_limit=3, min_runtime=0)
    decisions = [row.decision for row in result.timeline]
    assert decisions[:6] == ["busy", "busy", "idle", "idle", "unknown", "stop"]
    counts = [row.idle_count for row in result.timeline]
    assert counts[:6] == [0, 0, 1, 2, 2, 3]  # the unreadable row neither counts nor resets
    assert result.stop_time == 300.0
    assert decisions[6:] == [AFTER_STOP] * 7
    # Idle intervals ending at 120, 180 and 300 s (the unknown one at 240 is not idle).
    assert result.idle_seconds_billed == 180.0
    assert result.idle_seconds_unwatched == 180.0 + 6 * 60.0
    assert "would stop at t=300s" in result.summary()
    assert result.records()[0]["utilization"] == 90.0


def test_simulate_presets_on_recorded_traces() -> None:
    evening = TRACES / "notebook_evening.csv"
    stops = {p: simulate(evening, preset=p).stop_time for p in ("aggressive", "default", "conservative")}
    assert stops["aggressive"] < stops["default"] < stops["conservative"]
    multi = simulate(TRACES / "multi_gpu.csv")
    # Any busy GPU keeps the pod: nothing stops while gpu2 works (until 2100 s).
    assert multi.stop_time is not None and multi.stop_time >= 2100 + 4 * 30
    assert simulate(evening, IdlePolicy(idle_limit=1000)).stop_time is None
