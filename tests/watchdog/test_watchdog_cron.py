"""Cron mode (``--once``): one check per process, the count carried in the state file."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

from wd_support import API_KEY, POD_ID, FakeRunPod, LiveLog, Runner, write_trace

IDLE, BUSY = 1, 95


def test_cron_counts_across_invocations_and_waits_for_pod_uptime(cli: Runner, runpod_api: FakeRunPod) -> None:
    trace = write_trace(cli.tmp / "t.csv", [BUSY, IDLE, IDLE, BUSY, IDLE, IDLE, IDLE, IDLE, IDLE])
    state = cli.tmp / "state.json"
    env = {"RUNPOD_API_KEY": API_KEY, "RUNPOD_POD_ID": POD_ID, "IDLE_LIMIT": "3", "MIN_RUNTIME": "600"}
    runpod_api.uptime = 100.0

    def once() -> tuple[str, dict]:
        proc = cli.run("--once", "--utilization-trace", str(trace), "--state-file", str(state), env=env)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr, json.loads(state.read_text())

    expected = ["Work detected", "idle (1/3)", "idle (2/3)", "Work detected", "idle (1/3)", "idle (2/3)"]
    for i, text in enumerate(expected):
        err, saved = once()
        assert text in err
        assert saved["trace_row"] == i + 1 and saved["pod_id"] == POD_ID
        assert runpod_api.calls == [], "no API call before the idle limit"
    first_start = saved["first_start"]

    err, saved = once()  # 3/3, but the pod has run 100 s of 600
    assert "idle (3/3)" in err and "has run 100s of the 600s minimum runtime" in err
    assert runpod_api.ops() == ["pod"]

    runpod_api.uptime = 700.0
    err, saved = once()
    assert "idle (4/3)" in err and "Pod abc123 stop succeeded" in err
    assert runpod_api.ops() == ["pod", "pod", "podStop"]
    assert all(c.authorization == f"Bearer {API_KEY}" and c.pod_id == POD_ID for c in runpod_api.calls)
    assert saved["stopped_at"] is not None and saved["idle_count"] == 0
    assert saved["first_start"] == first_start


def test_cron_falls_back_to_first_start_when_api_is_down(cli: Runner, runpod_api: FakeRunPod) -> None:
    runpod_api.plan["pod"] = ["500"] * 10
    trace = write_trace(cli.tmp / "t.csv", [IDLE] * 5)
    state = cli.tmp / "state.json"
    args = (
        "--once",
        "--api-key",
        API_KEY,
        "--pod-id",
        POD_ID,
        "--utilization-trace",
        str(trace),
        "--state-file",
        str(state),
        "--idle-limit",
        "2",
        "--min-runtime",
        "4",
    )
    assert "idle (1/2)" in cli.run(*args).stderr
    first_start = json.loads(state.read_text())["first_start"]
    err = cli.run(*args).stderr
    assert "Pod uptime unavailable (pod query failed: JSONDecodeError" in err
    assert "not stopping yet" in err
    assert "podStop" not in runpod_api.ops()
    time.sleep(max(0.0, first_start + 4.2 - time.time()))
    proc = cli.run(*args)
    assert proc.returncode == 0 and "Pod abc123 stop succeeded" in proc.stderr
    assert runpod_api.ops()[-1] == "podStop"


def test_cron_failed_stop_exits_1_and_backs_off(cli: Runner, runpod_api: FakeRunPod) -> None:
    runpod_api.plan["podStop"] = ["500"]
    trace = write_trace(cli.tmp / "t.csv", [IDLE] * 5)
    args = (
        "--once",
        "--api-key",
        API_KEY,
        "--pod-id",
        POD_ID,
        "--utilization-trace",
        str(trace),
        "--state-file",
        str(cli.tmp / "s.json"),
        "--idle-limit",
        "1",
        "--min-runtime",
        "0",
        "--check-interval",
        "0.5",
    )
    proc = cli.run(*args)
    assert proc.returncode == 1 and "retrying in 0.5s" in proc.stderr
    saved = json.loads((cli.tmp / "s.json").read_text())
    assert saved["stop_failures"] == 1 and saved["next_attempt"] > saved["last_check"]
    time.sleep(0.5)
    proc = cli.run(*args)
    assert proc.returncode == 0 and "stop succeeded" in proc.stderr
    assert runpod_api.ops() == ["pod", "podStop", "pod", "podStop"]


def test_corrupt_state_file_warns_and_starts_fresh(cli: Runner) -> None:
    state = cli.tmp / "state.json"
    state.write_text('{"version": 1, "idle_count": ')
    trace = write_trace(cli.tmp / "t.csv", [IDLE] * 3)
    proc = cli.run("--once", "--dry-run", "--utilization-trace", str(trace), "--state-file", str(state))
    assert proc.returncode == 0
    assert f"WARNING - State file {state} is corrupt" in proc.stderr
    assert "idle (1/5)" in proc.stderr
    saved = json.loads(state.read_text())
    assert saved["idle_count"] == 1 and saved["version"] == 1
    assert not [p for p in cli.tmp.iterdir() if p.name.startswith(".watchdog-")], "temporary file left behind"


def test_state_of_another_pod_is_not_reused(cli: Runner) -> None:
    state = cli.tmp / "state.json"
    trace = write_trace(cli.tmp / "t.csv", [IDLE] * 3)
    base = ("--once", "--dry-run", "--utilization-trace", str(trace), "--state-file", str(state))
    assert "idle (1/5)" in cli.run(*base, "--pod-id", "podA").stderr
    assert "idle (2/5)" in cli.run(*base, "--pod-id", "podA").stderr
    err = cli.run(*base, "--pod-id", "podB").stderr
    assert "belongs to another pod" in err and "idle (1/5)" in err


def test_cron_simulated_trace_time(cli: Runner) -> None:
    """--once --simulate walks a trace one row per run, min runtime in trace time."""
    state = cli.tmp / "state.json"
    trace = write_trace(cli.tmp / "t.csv", [IDLE] * 6, step=300)
    args = (
        "--once",
        "--simulate",
        "--dry-run",
        "--utilization-trace",
        str(trace),
        "--state-file",
        str(state),
        "--idle-limit",
        "2",
        "--min-runtime",
        "900",
    )
    outputs = [cli.run(*args).stderr for _ in range(4)]
    assert "[t=0s] idle (1/2)" in outputs[0]
    assert "[t=300s] Idle limit reached, but the pod has run 300s of the 900s" in outputs[1]
    assert "[t=900s] Idle limit reached (4/2, runtime 900s): [dry-run] would stop pod" in outputs[3]


@contextlib.contextmanager
def slow_health(delay: float) -> Iterator[str]:
    """A health endpoint that takes ``delay`` seconds to answer "not busy"."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            time.sleep(delay)
            payload = b'{"busy": false}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()
        server.server_close()


def test_overlapping_cron_runs_lose_no_update(cli: Runner) -> None:
    state = cli.tmp / "state.json"
    with slow_health(1.0) as url:
        args = ("--once", "--dry-run", "--source", "none", "--health-url", url, "--state-file", str(state))
        procs = [cli.start(*args) for _ in range(2)]
        outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    saved = json.loads(state.read_text())
    assert (saved["checks"], saved["idle_count"]) == (2, 2), "one run's check was lost"
    errs = "".join(err for _, err in outs)
    assert "idle (1/5)" in errs and "idle (2/5)" in errs


def test_overlapping_cron_runs_stop_once(cli: Runner, runpod_api: FakeRunPod) -> None:
    state = cli.tmp / "state.json"
    args = (
        "--once",
        "--api-key",
        API_KEY,
        "--pod-id",
        POD_ID,
        "--source",
        "none",
        "--idle-limit",
        "2",
        "--min-runtime",
        "0",
        "--state-file",
        str(state),
    )
    assert "idle (1/2)" in cli.run(*args).stderr
    runpod_api.hang_seconds = 1.5
    runpod_api.plan["podStop"] = ["slow"]
    procs = [cli.start(*args) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert runpod_api.ops().count("podStop") == 1, "the pod was stopped twice"
    errs = "".join(err for _, err in outs)
    assert errs.count("stop succeeded") == 1 and "idle (1/2)" in errs


def test_a_second_loop_on_the_same_state_file_exits(cli: Runner) -> None:
    state = cli.tmp / "state.json"
    args = (
        "--dry-run",
        "--source",
        "none",
        "--check-interval",
        "0.2",
        "--idle-limit",
        "1000",
        "--state-file",
        str(state),
    )
    first = LiveLog(cli.start(*args))
    first.wait_for("Signals:")
    second = cli.run(*args)
    assert second.returncode == 4
    assert f"Another watchdog (pid {first.proc.pid}) already watches with state file {state}; exiting" in second.stderr
    assert "Signals:" not in second.stderr
    assert first.proc.poll() is None
    first.finish()


def test_no_readable_signal_never_stops_and_cron_exits_nonzero(cli: Runner) -> None:
    """GPU lost, Jupyter down, activity file unreadable: an ERROR each run, exit 3, no stop."""
    env = cli.fake_nvml([{"lost": True}])
    broken = cli.tmp / "activity-dir"
    broken.mkdir()
    args = (
        "--once",
        "--dry-run",
        "--jupyter-url",
        "http://127.0.0.1:9",
        "--activity-file",
        str(broken),
        "--idle-limit",
        "1",
        "--min-runtime",
        "0",
        "--unknown-grace",
        "0",
        "--state-file",
        str(cli.tmp / "s.json"),
    )
    for _ in range(2):
        proc = cli.run(*args, env=env)
        assert proc.returncode == 3, proc.stderr
        assert "ERROR - No signal readable (gpu: NVML: " in proc.stderr
        assert "the pod is not stopped while nothing can be read" in proc.stderr
        assert "would stop" not in proc.stderr
