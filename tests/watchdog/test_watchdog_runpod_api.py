"""The real runpod SDK against a fake RunPod GraphQL API: exact calls, key, timing."""

from __future__ import annotations

import time

from wd_support import API_KEY, POD_ID, FakeRunPod, Runner, assert_no_key, write_trace

IDLE, BUSY = 0, 90


def _api(pod: str = POD_ID) -> list[str]:
    return ["--api-key", API_KEY, "--pod-id", pod]


def _assert_authenticated(api: FakeRunPod, pod: str = POD_ID) -> None:
    for call in api.calls:
        assert call.pod_id == pod
        # runpod-python 1.x sends the key as a bearer token, older ones as ?api_key=
        sent = call.authorization or ""
        assert sent == f"Bearer {API_KEY}" or call.query_params.get("api_key") == [API_KEY]


def test_simulated_stop_happens_exactly_at_idle_limit_and_min_runtime(cli: Runner, runpod_api: FakeRunPod) -> None:
    trace = write_trace(cli.tmp / "t.csv", [BUSY, BUSY, BUSY, IDLE, IDLE, IDLE, IDLE, IDLE, IDLE])
    proc = cli.run(*_api(), "--simulate", "--utilization-trace", str(trace),
                   "--idle-limit", "3", "--min-runtime", "400")
    assert proc.returncode == 0, proc.stderr
    # Idle from t=180; 3/3 at t=300 but runtime 300 < 400; stop at t=420 (count 5).
    assert runpod_api.ops() == ["podStop"]
    _assert_authenticated(runpod_api)
    assert 'podStop(input: { podId: "abc123" })' in runpod_api.calls[0].query
    err = proc.stderr
    assert "[t=300s] Idle limit reached, but the pod has run 300s of the 400s minimum runtime" in err
    assert "[t=360s] idle (4/3)" in err
    assert "[t=420s] Idle limit reached (5/3, runtime 420s): stopping pod abc123" in err
    assert "Pod abc123 stop succeeded (status EXITED)" in err
    assert "would stop at t=420s" in proc.stdout
    assert "idle seconds billed: 300" in proc.stdout
    # The seed's log format.
    first = err.splitlines()[0]
    assert first[4] == "-" and first[19:28] == " - INFO -" and "Watchdog started: pod abc123, threshold 5%, interval 60s" in first


def test_terminate_action(cli: Runner, runpod_api: FakeRunPod) -> None:
    trace = write_trace(cli.tmp / "t.csv", [IDLE] * 4)
    proc = cli.run(*_api("pod-9_z"), "--simulate", "--utilization-trace", str(trace),
                   "--idle-limit", "2", "--min-runtime", "0", "--action", "terminate")
    assert proc.returncode == 0, proc.stderr
    assert runpod_api.ops() == ["podTerminate"]
    _assert_authenticated(runpod_api, "pod-9_z")
    assert "Pod pod-9_z terminate succeeded" in proc.stderr


def test_failures_are_logged_retried_with_backoff_and_key_scrubbed(cli: Runner, runpod_api: FakeRunPod) -> None:
    runpod_api.plan["podStop"] = ["500", "401", "gqlerror"]
    trace = write_trace(cli.tmp / "t.csv", [IDLE] * 20)
    proc = cli.run(*_api(), "--simulate", "--utilization-trace", str(trace), "--idle-limit", "2", "--min-runtime", "0")
    assert proc.returncode == 0, proc.stderr
    assert runpod_api.ops() == ["podStop"] * 4
    _assert_authenticated(runpod_api)
    err = proc.stderr
    # Failures at t=60, 120, 240 (backoff 60, 120, 240 s); success at t=480.
    assert "[t=60s] Pod abc123 stop failed (podStop failed: JSONDecodeError" in err
    assert "retrying in 60s" in err
    assert "[t=120s] Pod abc123 stop failed (podStop failed: AuthenticationError: Unauthorized" in err
    assert "[t=180s] Idle limit reached; next stop attempt in 60s" in err
    assert "[t=240s] Pod abc123 stop failed (podStop failed: QueryError: Something went wrong (key ***))" in err
    assert "[t=480s] Pod abc123 stop succeeded" in err
    assert "would stop at t=480s" in proc.stdout


def test_stop_keeps_failing_until_trace_ends(cli: Runner, runpod_api: FakeRunPod) -> None:
    runpod_api.plan["podStop"] = ["401"] * 10
    trace = write_trace(cli.tmp / "t.csv", [IDLE] * 4)
    proc = cli.run(*_api(), "--simulate", "--utilization-trace", str(trace), "--idle-limit", "2", "--min-runtime", "0")
    assert proc.returncode == 1
    assert runpod_api.ops() == ["podStop", "podStop"]
    assert "not be stopped within the trace" in proc.stdout


def test_hanging_api_times_out_and_is_retried(cli: Runner, runpod_api: FakeRunPod) -> None:
    runpod_api.plan["podStop"] = ["hang"]
    trace = write_trace(cli.tmp / "t.csv", [IDLE] * 5)
    started = time.time()
    proc = cli.run(*_api(), "--simulate", "--utilization-trace", str(trace), "--idle-limit", "2",
                   "--min-runtime", "0", "--api-timeout", "0.5", timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert time.time() - started < runpod_api.hang_seconds + 10
    assert runpod_api.ops() == ["podStop", "podStop"]
    assert "podStop failed: TimeoutError: no answer within 0.5s" in proc.stderr


def test_loop_asks_uptime_only_at_idle_limit_and_waits_for_min_runtime(cli: Runner, runpod_api: FakeRunPod) -> None:
    runpod_api.uptime = 0.5
    trace = write_trace(cli.tmp / "t.csv", [BUSY] * 3 + [IDLE] * 60)
    started = time.time()
    proc = cli.run(*_api(), "--utilization-trace", str(trace), "--check-interval", "0.2", "--idle-limit", "3",
                   "--min-runtime", "2", "--state-file", str(cli.tmp / "state.json"), timeout=60)
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


def test_source_runpod_reads_utilization_from_api(cli: Runner, runpod_api: FakeRunPod) -> None:
    runpod_api.gpus = [80.0, 1.0]
    proc = cli.start(*_api(), "--source", "runpod", "--check-interval", "0.2", "--idle-limit", "2",
                     "--min-runtime", "0", "--state-file", str(cli.tmp / "state.json"))
    deadline = time.time() + 20
    while runpod_api.ops().count("pod") < 4 and time.time() < deadline:
        time.sleep(0.05)
    assert "podStop" not in runpod_api.ops()  # one GPU at 80 %: busy
    runpod_api.gpus = [2.0, 1.0]
    out, err = proc.communicate(timeout=30)
    assert_no_key(out + err)
    assert proc.returncode == 0, err
    assert "GPU utilization: 80%, 1%" in err and "GPU utilization: 2%, 1%" in err
    ops = runpod_api.ops()
    assert ops[-1] == "podStop" and set(ops[:-1]) == {"pod"}
    _assert_authenticated(runpod_api)


def test_dry_run_never_calls_the_api(cli: Runner, runpod_api: FakeRunPod) -> None:
    trace = write_trace(cli.tmp / "t.csv", [IDLE] * 10)
    proc = cli.run(*_api(), "--dry-run", "--utilization-trace", str(trace), "--check-interval", "0.05",
                   "--idle-limit", "2", "--min-runtime", "0", "--state-file", str(cli.tmp / "s.json"))
    assert proc.returncode == 0, proc.stderr
    assert runpod_api.calls == []
    assert "[dry-run] would stop pod abc123" in proc.stderr
