"""The seed's schedules: peak hours, start/stop/status for cron, and status() for a notebook."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from wd_support import API_KEY, POD_ID, FakeRunPod, Runner

from reviewkit.watchdog import status
from reviewkit.watchdog.peak import PeakHours, parse_window

SEOUL = ZoneInfo("Asia/Seoul")


def _window(start_in: float, end_in: float) -> str:
    """A HH:MM-HH:MM window from ``start_in`` to ``end_in`` hours from now, Seoul time."""
    now = datetime.now(SEOUL)
    return f"{now + timedelta(hours=start_in):%H:%M}-{now + timedelta(hours=end_in):%H:%M}"


def test_peak_window_in_its_time_zone() -> None:
    noon_utc = datetime(2024, 1, 1, 12, 0, tzinfo=timezone.utc).timestamp()  # 21:00 in Seoul
    assert PeakHours(*parse_window("20:00-22:00"), zone=SEOUL).active(noon_utc)
    assert not PeakHours(*parse_window("09:00-18:00"), zone=SEOUL).active(noon_utc)
    assert PeakHours(*parse_window("11:00-13:00"), zone=ZoneInfo("UTC")).active(noon_utc)
    assert PeakHours(*parse_window("18:00-02:00"), zone=SEOUL).active(noon_utc)  # wraps midnight
    assert not PeakHours(*parse_window("22:00-06:00"), zone=SEOUL).active(noon_utc)


def test_peak_hours_change_the_preset_or_hold_the_stop(cli: Runner) -> None:
    base = (
        "--once",
        "--dry-run",
        "--source",
        "none",
        "--idle-limit",
        "1",
        "--min-runtime",
        "0",
        "--timezone",
        "Asia/Seoul",
    )
    inside, outside = _window(-1, 1), _window(2, 3)

    proc = cli.run(*base, "--peak-hours", inside, "--peak-preset", "off", "--state-file", str(cli.tmp / "a.json"))
    assert proc.returncode == 0, proc.stderr
    assert f"Peak hours ({inside} Asia/Seoul): no stopping" in proc.stderr
    assert (
        f"Idle limit reached, but it is peak hours ({inside} Asia/Seoul, --peak-preset off); not stopping"
        in proc.stderr
    )
    assert "would stop" not in proc.stderr

    proc = cli.run(*base, "--peak-hours", inside, "--state-file", str(cli.tmp / "b.json"))  # conservative by default
    assert "preset conservative: threshold 3%, idle limit 10, min runtime 1800s" in proc.stderr
    assert "idle (1/10)" in proc.stderr and "would stop" not in proc.stderr

    proc = cli.run(*base, "--peak-hours", outside, "--peak-preset", "off", "--state-file", str(cli.tmp / "c.json"))
    assert "idle (1/1)" in proc.stderr and "[dry-run] would stop pod" in proc.stderr
    assert "Peak hours (" not in proc.stderr


def _cmd(*args: str) -> list[str]:
    return [*args, "--pod-id", POD_ID, "--retry-delay", "0.05"]


def test_stop_command_retries_and_skips_a_stopped_pod(cli: Runner, runpod_api: FakeRunPod) -> None:
    runpod_api.plan["podStop"] = ["500json", "500"]
    proc = cli.run(*_cmd("stop"), env={"RUNPOD_API_KEY": API_KEY})
    assert proc.returncode == 0, proc.stderr
    assert runpod_api.ops() == ["pod", "podStop", "podStop", "podStop"]
    assert "Pod abc123 stop failed (podStop failed: KeyError: 'data'); attempt 1 of 5, retrying in 0.05s" in proc.stderr
    assert "Pod abc123 stop succeeded (status EXITED)" in proc.stderr
    proc = cli.run(*_cmd("stop"), env={"RUNPOD_API_KEY": API_KEY})
    assert proc.returncode == 0 and "Pod abc123 is already stopped (status EXITED); nothing to do" in proc.stderr
    assert runpod_api.ops().count("podStop") == 3
    assert all(c.authorization == f"Bearer {API_KEY}" for c in runpod_api.calls)


def test_start_command_resumes_with_the_pods_gpu_count(cli: Runner, runpod_api: FakeRunPod) -> None:
    runpod_api.desired_status, runpod_api.gpu_count = "EXITED", 2
    proc = cli.run(*_cmd("start"), "--api-key", API_KEY)
    assert proc.returncode == 0, proc.stderr
    assert runpod_api.ops() == ["pod", "podResume"]
    assert 'podResume(input: { podId: "abc123", gpuCount: 2 })' in runpod_api.calls[-1].query
    assert "Pod abc123 start succeeded (status RUNNING)" in proc.stderr
    proc = cli.run(*_cmd("start"), "--api-key", API_KEY)
    assert "Pod abc123 is already running (status RUNNING); nothing to do" in proc.stderr


def test_start_command_gives_up_after_its_attempts(cli: Runner, runpod_api: FakeRunPod) -> None:
    runpod_api.desired_status = "EXITED"
    runpod_api.plan["podResume"] = ["500"] * 5
    proc = cli.run(*_cmd("start"), "--api-key", API_KEY, "--attempts", "3", "--gpu-count", "1")
    assert proc.returncode == 1
    assert runpod_api.ops() == ["pod"] + ["podResume"] * 3
    assert "ERROR - Pod abc123 start failed after 3 attempt(s)" in proc.stderr


def test_commands_refuse_abbreviations_without_echoing_the_key(cli: Runner, runpod_api: FakeRunPod) -> None:
    proc = cli.run(*_cmd("stop"), "--api=" + API_KEY)
    assert proc.returncode == 2 and "unrecognized arguments: --api=***" in proc.stderr
    assert cli.run(*_cmd("stop"), "--attempts", "0", "--api-key", API_KEY).returncode == 2
    assert runpod_api.calls == []


def test_status_in_a_notebook_and_on_the_command_line(
    cli: Runner, runpod_api: FakeRunPod, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = cli.tmp / "state.json"
    proc = cli.run("--once", "--api-key", API_KEY, "--pod-id", POD_ID, "--source", "none", "--state-file", str(state))
    assert proc.returncode == 0, proc.stderr
    saved = json.loads(state.read_text())
    monkeypatch.setenv("RUNPOD_API_BASE_URL", runpod_api.url)
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)

    offline = status(state)  # no key: the state file only
    assert (offline.idle_count, offline.idle_limit, offline.pod_id) == (1, 5, POD_ID)
    assert set(offline.signals) == {"jupyter", "activity"} and offline.signals["activity"][0] == "idle"
    assert offline.billed_dollars is None and "no RUNPOD_API_KEY" in str(offline)
    assert offline.would_stop_at == pytest.approx(saved["last_wall_check"] + 4 * 60)

    report = status(state, api_key=API_KEY)
    assert runpod_api.ops() == ["pod"]
    assert report.cost_per_hr == 0.69 and report.desired_status == "RUNNING"
    assert report.billed_dollars == pytest.approx(0.69 * 10_000 / 3600, abs=0.01)
    assert "Pod abc123: RUNNING, up 2.78 h at $0.69/h: $1.92 billed since it started" in str(report)
    assert "idle count 1/5" in str(report)

    proc = cli.run("status", "--pod-id", POD_ID, "--api-key", API_KEY, "--state-file", str(state))
    assert proc.returncode == 0, proc.stderr
    assert "$1.92 billed since it started" in proc.stdout and "idle count 1/5" in proc.stdout
