"""Options: precedence flag > env > preset > default, every invalid value, clean imports."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from wd_support import API_KEY, REPO, TRACES, WATCHDOG_ENV, Runner, assert_no_key, write_trace

from reviewkit.watchdog import PRESETS, IdlePolicy
from reviewkit.watchdog.cli import main, resolve


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in WATCHDOG_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_seed_defaults_and_presets() -> None:
    args = resolve(["--dry-run"])
    assert (args.idle_threshold, args.check_interval, args.idle_limit, args.min_runtime) == (5.0, 60.0, 5, 600.0)
    assert args.action == "stop" and args.source == "nvml" and not args.once
    assert dict(PRESETS["aggressive"]) == {
        "idle_threshold": 5.0,
        "check_interval": 60.0,
        "idle_limit": 3,
        "min_runtime": 300.0,
    }
    assert dict(PRESETS["conservative"]) == {
        "idle_threshold": 3.0,
        "check_interval": 60.0,
        "idle_limit": 10,
        "min_runtime": 1800.0,
    }
    assert IdlePolicy.preset("default") == IdlePolicy(5.0, 60.0, 5, 600.0)
    cons = resolve(["--dry-run", "--preset", "conservative"])
    assert (cons.idle_threshold, cons.idle_limit, cons.min_runtime) == (3.0, 10, 1800.0)


def test_flag_beats_env_beats_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDLE_LIMIT", "7")
    monkeypatch.setenv("CHECK_INTERVAL", "0.25")
    monkeypatch.setenv("WATCHDOG_PRESET", "aggressive")
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    monkeypatch.setenv("RUNPOD_POD_ID", "from-env")
    args = resolve(["--idle-limit", "9", "--pod-id", "from-flag"])
    assert args.idle_limit == 9  # flag
    assert args.check_interval == 0.25  # env, fractions allowed
    assert args.min_runtime == 300.0  # preset
    assert args.api_key == API_KEY and args.pod_id == "from-flag"
    monkeypatch.setenv("IDLE_LIMIT", "")  # empty means unset
    assert resolve(["--dry-run"]).idle_limit == 3


INVALID = [
    (["--idle-threshold", "abc"], "--idle-threshold"),
    (["--idle-threshold", "0"], "--idle-threshold"),
    (["--idle-threshold", "101"], "--idle-threshold"),
    (["--idle-threshold", "nan"], "--idle-threshold"),
    (["--check-interval", "0"], "--check-interval"),
    (["--check-interval", "-1"], "--check-interval"),
    (["--check-interval", "1m"], "--check-interval"),
    (["--idle-limit", "0"], "--idle-limit"),
    (["--idle-limit", "2.5"], "--idle-limit"),
    (["--min-runtime", "-5"], "--min-runtime"),
    (["--api-timeout", "0"], "--api-timeout"),
    (["--action", "pause"], "--action"),
    (["--source", "gpu"], "--source"),
    (["--preset", "lazy"], "--preset"),
    (["--pod-id", 'x") { id } }'], "--pod-id"),
    (["--jupyter-url", "localhost:8888"], "--jupyter-url"),
    (["--health-url", "ftp://x/health"], "--health-url"),
    (["--simulate"], "--simulate"),
    (["--utilization-trace", "/nonexistent/trace.csv"], "--utilization-trace"),
    (["--source", "runpod", "--utilization-trace", str(TRACES / "multi_gpu.csv")], "--utilization-trace"),
    (["--bogus"], "--bogus"),
    (["--dry"], "--dry"),  # no abbreviations
    (["--unknown-grace", "-1"], "--unknown-grace"),
    (["--unknown-grace", "soon"], "--unknown-grace"),
    (["--peak-hours", "25:00-18:00"], "--peak-hours"),
    (["--peak-hours", "9-18"], "--peak-hours"),
    (["--peak-hours", "09:00-09:00"], "--peak-hours"),
    (["--peak-hours", "09:00-18:00", "--peak-preset", "lazy"], "--peak-preset"),
    (["--peak-hours", "09:00-18:00", "--timezone", "Mars/Olympus"], "--timezone"),
    (["--peak-preset", "off"], "--peak-hours"),
    (
        ["--peak-hours", "09:00-18:00", "--simulate", "--utilization-trace", str(TRACES / "multi_gpu.csv")],
        "--peak-hours",
    ),
]


@pytest.mark.parametrize(("argv", "option"), INVALID, ids=[" ".join(a)[:40] for a, _ in INVALID])
def test_invalid_flags_exit_2_naming_the_option(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--dry-run", "--once", "--api-key", API_KEY, *argv]) == 2
    err = capsys.readouterr().err
    assert option in err
    assert_no_key(err)


@pytest.mark.parametrize(
    ("env", "value", "option"),
    [
        ("IDLE_THRESHOLD", "5%", "--idle-threshold"),
        ("CHECK_INTERVAL", "soon", "--check-interval"),
        ("IDLE_LIMIT", "-1", "--idle-limit"),
        ("MIN_RUNTIME", "ten", "--min-runtime"),
        ("WATCHDOG_ACTION", "delete", "--action"),
        ("WATCHDOG_PRESET", "x", "--preset"),
        ("WATCHDOG_SOURCE", "gpu", "--source"),
        ("HEALTH_URL", "localhost:8000", "--health-url"),
        ("RUNPOD_POD_ID", "a b", "--pod-id"),
        ("WATCHDOG_UNKNOWN_GRACE", "-1", "--unknown-grace"),
        ("WATCHDOG_PEAK_PRESET", "lazy", "--peak-preset"),
    ],
)
def test_invalid_env_exits_2_naming_variable_and_option(
    env: str, value: str, option: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(env, value)
    assert main(["--dry-run"]) == 2
    err = capsys.readouterr().err
    assert option in err
    if env in ("IDLE_THRESHOLD", "CHECK_INTERVAL", "IDLE_LIMIT", "MIN_RUNTIME"):
        assert f"{env} (for {option}): invalid value {value!r}" in err
    # Every option, numbers or not, names the variable its bad value came from.
    assert re.search(rf"{env} \(for {option}\): invalid (value|choice|URL|pod id) {re.escape(repr(value))}", err), err


def test_no_error_message_echoes_a_secret(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``--api=KEY`` is no abbreviation of --api-key, and the refusal must not print the key."""
    for argv, shown in [
        (["--api=" + API_KEY], "unrecognized arguments: --api=***"),
        (["--api", API_KEY], "unrecognized arguments: --api (a value)"),
        ([API_KEY], "unrecognized arguments: (a value)"),
        (["--api-key=" + API_KEY, "--idle-limit", API_KEY], "argument --idle-limit: invalid value '***'"),
        (["--jupyter-token", "tok-secret-42", "--jupyter-url", "tok-secret-42"], "invalid URL '***'"),
    ]:
        assert main(["--dry-run", "--once", *argv]) == 2  # --once: a regression ends instead of looping
        err = capsys.readouterr().err
        assert shown in err, err
        assert_no_key(err) and "tok-secret-42" not in err
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    assert main(["--dry-run", "--idle-threshold", API_KEY]) == 2
    assert_no_key(capsys.readouterr().err)


def test_terminate_must_be_on_the_command_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_ACTION", "terminate")
    assert main(["--dry-run", "--once"]) == 2
    err = capsys.readouterr().err
    assert "WATCHDOG_ACTION=terminate is refused" in err and "--action terminate" in err
    assert resolve(["--dry-run", "--action", "terminate"]).action == "terminate"
    monkeypatch.setenv("WATCHDOG_ACTION", "stop")
    assert resolve(["--dry-run"]).action == "stop"


def test_start_logs_the_activity_file_and_the_jupyter_directory(tmp_path: Path) -> None:
    runner = Runner(tmp_path, None)
    proc = runner.run("--once", "--dry-run", "--source", "none", "--state-file", str(tmp_path / "s.json"))
    assert proc.returncode == 0, proc.stderr
    assert (
        f"Activity file: {tmp_path / 'activity.json'} (the notebook must use the same path: REVIEWKIT_ACTIVITY_FILE)"
        in proc.stderr
    )
    assert f"Jupyter: servers found in {tmp_path / 'jupyter-runtime'}" in proc.stderr


def test_missing_key_or_pod_is_an_error_unless_dry_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["--pod-id", "abc"]) == 2
    assert "--api-key" in capsys.readouterr().err
    assert main(["--api-key", API_KEY]) == 2
    err = capsys.readouterr().err
    assert "--pod-id" in err and API_KEY not in err
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    monkeypatch.setenv("RUNPOD_POD_ID", "abc")
    assert resolve([]).pod_id == "abc"
    monkeypatch.delenv("RUNPOD_API_KEY")
    assert main(["--dry-run", "--source", "runpod"]) == 2  # reading the API needs the key
    assert "--api-key" in capsys.readouterr().err


def test_dry_run_needs_no_credentials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = write_trace(tmp_path / "t.csv", [0, 0])
    assert (
        main(["--dry-run", "--simulate", "--utilization-trace", str(trace), "--idle-limit", "2", "--min-runtime", "0"])
        == 0
    )
    captured = capsys.readouterr()
    assert "would stop at t=60s" in captured.out
    assert "[dry-run] would stop pod (no pod id)" in captured.err


def test_unreadable_nvml_is_never_idle(tmp_path: Path) -> None:
    """Without a GPU (this CI), NVML fails: a warning, and the idle count stays at 0."""
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("NVML works here")
    except Exception:  # noqa: BLE001
        pass
    runner = Runner(tmp_path, None)
    for _ in range(2):
        proc = runner.run(
            "--once", "--dry-run", "--idle-limit", "1", "--min-runtime", "0", "--state-file", str(tmp_path / "s.json")
        )
        assert proc.returncode == 0
        assert "WARNING - GPU utilization unavailable: NVML" in proc.stderr
        assert "idle count stays at 0/1" in proc.stderr
        assert "would stop" not in proc.stderr


BLOCKER = textwrap.dedent(
    """
    import importlib.abc, runpy, sys
    BLOCKED = {"pandas", "numpy", "vllm", "torch"}

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked import of {name}")
            return None

    sys.meta_path.insert(0, Refuse())
    sys.argv = ["watchdog.py", *sys.argv[1:]]
    try:
        runpy.run_path("watchdog.py", run_name="__main__")
    except SystemExit as exc:
        code = exc.code
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("LOADED", loaded, "EXIT", code)
    """
)


@pytest.mark.parametrize("api", [False, True], ids=["simulate", "with-runpod-sdk"])
def test_import_path_is_clean(api: bool, tmp_path: Path, runpod_api) -> None:
    if api:  # a real-time replay that stops the pod through the SDK
        trace = write_trace(tmp_path / "t.csv", [0] * 20)
        args = [
            "--utilization-trace",
            str(trace),
            "--check-interval",
            "0.05",
            "--idle-limit",
            "2",
            "--min-runtime",
            "0",
            "--state-file",
            str(tmp_path / "s.json"),
            "--api-key",
            API_KEY,
            "--pod-id",
            "abc123",
        ]
    else:
        args = ["--simulate", "--utilization-trace", str(TRACES / "notebook_evening.csv")]
    runner = Runner(tmp_path, runpod_api)
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, *args], cwd=REPO, env=runner.env, capture_output=True, text=True, timeout=60
    )
    assert "LOADED [] EXIT 0" in proc.stdout, proc.stderr[-3000:]
    if api:
        assert runpod_api.ops() == ["pod", "podStop"] and "Pod abc123 stop succeeded" in proc.stderr
    else:
        assert "would stop at t=3720s" in proc.stdout and runpod_api.ops() == []
    assert_no_key(proc.stdout + proc.stderr)


def test_sigterm_ends_the_loop_cleanly(tmp_path: Path) -> None:
    runner = Runner(tmp_path, None)
    try:
        proc = runner.start(
            "--dry-run", "--source", "none", "--check-interval", "0.1", "--state-file", str(tmp_path / "s.json")
        )
        assert proc.stderr is not None
        assert "Watchdog started" in proc.stderr.readline()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        runner.close()
    assert proc.returncode == 130
    assert "Watchdog interrupted; pod (none) left running" in err
