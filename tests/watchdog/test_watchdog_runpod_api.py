"""The real runpod SDK against the loopback RunPod GraphQL stand-in: exact calls, key, timing.

Stop-path tests replay a trace in real time with a short ``--check-interval``
(``--simulate`` never calls the API: it implies ``--dry-run``).
"""

from __future__ import annotations

import time

from wd_support import API_KEY, POD_ID, FakeRunPod, LiveLog, Runner, assert_no_key, write_trace

IDLE, BUSY = 0, 90


def _api(pod: str = POD_ID) -> list[str]:
    return ["--api-key", API_KEY, "--pod-id", pod]


def _assert_authenticated(api: FakeRunPod, pod: str = POD_ID) -> None:
    for call in api.calls:
        assert call.pod_id == pod
        # runpod-python 1.x sends the key as a bearer token, older ones as ?api_key=
        sent = call.authorization or ""
        assert sent == f"Bearer {API_KEY}" or call.query_params.get("api_key") == [API_KEY]


def test_simulate_never_calls_the_api_even_inside_a_pod(cli: Runner, runpod_api: FakeRunPod) -> None:
    """Inside a pod RUNPOD_POD_ID (and often the key) is set: a replay must not stop that pod."""
    trace = write_trace(cli.tmp / "t.csv", [BUSY, BUSY, BUSY, IDLE, IDLE, IDLE, IDLE, IDLE, IDLE])
    proc = cli.run(
        "--simulate",
        "--utilization-trace",
        str(trace),
        "--idle-limit",
        "3",
        "--min-runtime",
        "400",
        env={"RUNPOD_POD_ID": POD_ID, "RUNPOD_API_KEY": API_KEY},
    )
    assert proc.returncode == 0, proc.stderr
    assert runpod_api.calls == []
    err = proc.stderr
    assert "mode simulate, dry-run" in err
    # Idle from t=180; 3/3 at t=300 but runtime 300 < 400; the stop decision at t=420 (count 5).
    assert "[t=300s] Idle limit reached, but the pod has run 300s of the 400s minimum runtime" in err
    assert "[t=420s] Idle limit reached (5/3, runtime 420s): [dry-run] would stop pod abc123" in err
    assert "would stop at t=420s" in proc.stdout and "idle seconds billed: 300" in proc.stdout
    first = err.splitlines()[0]  # the seed's log format
    assert (
        first[4] == "-"
        and first[19:28] == " - INFO -"
        and "Watchdog started: pod abc123, threshold 5%, interval 60s" in first
    )


def test_terminate_action(cli: Runner, runpod_api: FakeRunPod) -> None:
    trace = write_trace(cli.tmp / "t.csv", [IDLE] * 40)
    proc = cli.run(
        *_api("pod-9_z"),
        "--utilization-trace",
        str(trace),
        "--check-interval",
        "0.1",
        "--idle-limit",
        "2",
        "--min-runtime",
        "0",
        "--action",
        "terminate",
        "--state-file",
        str(cli.tmp / "s.json"),
    )
    assert proc.returncode == 0, proc.stderr
    assert runpod_api.ops() == ["pod", "podTerminate"]
    _assert_authenticated(runpod_api, "pod-9_z")
    assert "Idle limit reached (2/2, runtime 10000s): terminating pod pod-9_z" in proc.stderr
    assert "Pod pod-9_z terminate succeeded" in proc.stderr


def test_failures_are_logged_retried_with_backoff_and_key_scrubbed(cli: Runner, runpod_api: FakeRunPod) -> None:
    # "500json": HTTP 500 with a JSON body without "data"; the SDK raises KeyError('data').
    runpod_api.plan["podStop"] = ["500", "401", "gqlerror", "500json"]
    trace = write_trace(cli.tmp / "t.csv", [IDLE] * 100)
    proc = cli.run(
        *_api(),
        "--utilization-trace",
        str(trace),
        "--check-interval",
        "0.1",
        "--idle-limit",
        "2",
        "--min-runtime",
        "0",
        "--state-file",
        str(cli.tmp / "s.json"),
    )
    assert proc.returncode == 0, proc.stderr
    assert runpod_api.ops() == ["pod"] + ["podStop"] * 5
    _assert_authenticated(runpod_api)
    err = proc.stderr
    assert "Pod abc123 stop failed (podStop failed: JSONDecodeError" in err and "retrying in 0.1s" in err
    assert (
        "Pod abc123 stop failed (podStop failed: AuthenticationError: Unauthorized" in err and "retrying in 0.2s" in err
    )
    assert "Pod abc123 stop failed (podStop failed: QueryError: Something went wrong (key ***))" in err
    assert "Pod abc123 stop failed (podStop failed: KeyError: 'data'); still monitoring, retrying in 0.8s" in err
    assert "Idle limit reached; next stop attempt in" in err
    assert "Pod abc123 stop succeeded (status EXITED)" in err
    stops = [c.at for c in runpod_api.calls if c.op == "podStop"]
    gaps = [b - a for a, b in zip(stops, stops[1:])]
    # (The first gap is shorter: the first call's own time, importing the SDK, counts.)
    assert all(gap >= want - 0.02 for gap, want in zip(gaps[1:], [0.2, 0.4, 0.8])), gaps


def test_stop_keeps_failing_until_trace_ends(cli: Runner, runpod_api: FakeRunPod) -> None:
    runpod_api.plan["podStop"] = ["401"] * 50
    trace = write_trace(cli.tmp / "t.csv", [IDLE] * 6)
    proc = cli.run(
        *_api(),
        "--utilization-trace",
        str(trace),
        "--check-interval",
        "0.05",
        "--idle-limit",
        "2",
        "--min-runtime",
        "0",
        "--state-file",
        str(cli.tmp / "s.json"),
    )
    assert proc.returncode == 1
    assert "podStop" in runpod_api.ops() and "stop succeeded" not in proc.stderr
    assert "Utilization trace ended after 6 rows" in proc.stderr


def test_hanging_api_times_out_and_is_retried(cli: Runner, runpod_api: FakeRunPod) -> None:
    runpod_api.plan["podStop"] = ["hang"]
    trace = write_trace(cli.tmp / "t.csv", [IDLE] * 60)
    started = time.time()
    proc = cli.run(
        *_api(),
        "--utilization-trace",
        str(trace),
        "--check-interval",
        "0.1",
        "--idle-limit",
        "2",
        "--min-runtime",
        "0",
        "--api-timeout",
        "0.5",
        "--state-file",
        str(cli.tmp / "s.json"),
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert time.time() - started < runpod_api.hang_seconds + 10
    assert runpod_api.ops() == ["pod", "podStop", "podStop"]
    assert "podStop failed: TimeoutError: no answer within 0.5s" in proc.stderr


def test_loop_asks_uptime_only_at_idle_limit_and_waits_for_min_runtime(cli: Runner, runpod_api: FakeRunPod) -> None:
    runpod_api.uptime = 0.5
    trace = write_trace(cli.tmp / "t.csv", [BUSY] * 3 + [IDLE] * 60)
    started = time.time()
    proc = cli.run(
        *_api(),
        "--utilization-trace",
        str(trace),
        "--check-interval",
        "0.2",
        "--idle-limit",
        "3",
        "--min-runtime",
        "2",
        "--state-file",
        str(cli.tmp / "state.json"),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    # One pod query (at the 3rd idle check, cached after), then the stop.
    assert runpod_api.ops() == ["pod", "podStop"]
    _assert_authenticated(runpod_api)
    assert "uptimeInSeconds" in runpod_api.calls[0].query
    pod_query, stop = runpod_api.calls
    # No call before 3 busy + 3 idle checks, 0.2 s apart.
    assert pod_query.at - started >= 5 * 0.2
    # The pod reported 0.5 s of uptime; the stop waits until it has run 2 s.
    assert stop.at - pod_query.at >= 1.5 - 0.05
    err = proc.stderr
    assert "idle (1/3)" in err and "idle (3/3)" in err
    assert "not stopping yet" in err
    assert "Pod abc123 stop succeeded" in err
    assert err.index("idle (3/3)") < err.index("Pod abc123 stop succeeded")


def test_source_runpod_stopped_pod_null_gpu_and_resume(cli: Runner, runpod_api: FakeRunPod) -> None:
    """From a separate server: null utilisation is unknown, a stopped pod is "stopped"
    (no stop call), and a resumed pod is watched (and stopped) again."""
    runpod_api.gpus = [None, 1.0]  # the API has no figure for gpu0: not 0 %
    live = LiveLog(
        cli.start(
            *_api(),
            "--source",
            "runpod",
            "--check-interval",
            "0.15",
            "--idle-limit",
            "2",
            "--min-runtime",
            "0",
            "--state-file",
            str(cli.tmp / "state.json"),
        )
    )
    live.wait_for(lambda t: t.count("idle count stays at 0/2") >= 4)
    assert "podStop" not in runpod_api.ops()
    assert "GPU utilization unavailable: RunPod API: 1%; unreadable gpu0: the API reports no utilisation" in live.text
    runpod_api.gpus = [80.0, 1.0]
    live.wait_for("GPU utilization: 80%, 1%")
    assert "podStop" not in runpod_api.ops()  # one GPU at 80 %: busy
    runpod_api.gpus = [2.0, 1.0]
    live.wait_for("Pod abc123 stop succeeded (status EXITED)")
    live.wait_for(
        lambda t: t.count("Pod abc123 is not running (gpu: pod is EXITED); nothing to stop, still watching") >= 4
    )
    assert runpod_api.ops().count("podStop") == 1
    runpod_api.desired_status = "RUNNING"  # the user resumes the pod in the console
    live.wait_for(lambda t: t.count("stop succeeded") == 2)
    err = live.finish()
    assert "Watchdog interrupted" in err
    ops = runpod_api.ops()
    assert ops.count("podStop") == 2 and set(ops) == {"pod", "podStop"}
    _assert_authenticated(runpod_api)
    assert "GPU utilization: 2%, 1%" in err


def test_dry_run_never_calls_the_api(cli: Runner, runpod_api: FakeRunPod) -> None:
    trace = write_trace(cli.tmp / "t.csv", [IDLE] * 10)
    proc = cli.run(
        *_api(),
        "--dry-run",
        "--utilization-trace",
        str(trace),
        "--check-interval",
        "0.05",
        "--idle-limit",
        "2",
        "--min-runtime",
        "0",
        "--state-file",
        str(cli.tmp / "s.json"),
    )
    assert proc.returncode == 0, proc.stderr
    assert runpod_api.calls == []
    assert "[dry-run] would stop pod abc123" in proc.stderr
    assert_no_key(proc.stderr)
