"""Command line of the idle watchdog (``python watchdog.py``, ``reviewkit-watchdog``).

Every setting resolves flag > environment variable > ``--preset`` > the seed's
default, and is validated here so a typo exits with status 2 naming the option
instead of surfacing as a watchdog that never stops the pod. Imports stay light:
no vllm, torch, pandas or numpy; the runpod SDK only when the API is used.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from reviewkit.watchdog.policy import PRESETS, IdlePolicy
from reviewkit.watchdog.signals import ActivityFileSignal, GpuSignal, HealthSignal, JupyterSignal, NvmlReader, RunPodReader, Signal
from reviewkit.watchdog.simulate import AFTER_STOP, SimulationResult, TimelineRow
from reviewkit.watchdog.state import WatchdogState, default_state_path, load_state
from reviewkit.watchdog.trace import TraceEnded, TraceFormatError, TraceReader

LOG_FORMAT = "%(asctime)s - %(levelname)s - %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
_POD_ID = re.compile(r"^[A-Za-z0-9_-]+$")


def _positive(v: float) -> bool:
    return v > 0


@dataclass(frozen=True)
class _Number:
    dest: str
    flag: str
    env: str
    kind: Callable[[Any], Any]
    ok: Callable[[Any], bool]
    rule: str


_NUMBERS = (
    _Number("idle_threshold", "--idle-threshold", "IDLE_THRESHOLD", float, lambda v: 0 < v <= 100, "a percentage above 0 and at most 100"),
    _Number("check_interval", "--check-interval", "CHECK_INTERVAL", float, _positive, "a number of seconds above 0"),
    _Number("idle_limit", "--idle-limit", "IDLE_LIMIT", int, lambda v: v >= 1, "a whole number of checks, at least 1"),
    _Number("min_runtime", "--min-runtime", "MIN_RUNTIME", float, lambda v: v >= 0, "a number of seconds, at least 0"),
    _Number("api_timeout", "--api-timeout", "RUNPOD_API_TIMEOUT", float, _positive, "a number of seconds above 0"),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="watchdog.py",
        description="Stop (or terminate) a RunPod pod once its GPUs, Jupyter kernels and "
        "reviewkit runs have been idle for IDLE_LIMIT consecutive checks.",
    )
    a = p.add_argument
    a("--api-key", help="RunPod API key (env RUNPOD_API_KEY); never logged")
    a("--pod-id", help="pod to stop (env RUNPOD_POD_ID, set by RunPod inside every pod)")
    a("--preset", help="seed preset: " + ", ".join(PRESETS) + " (env WATCHDOG_PRESET; default: default)")
    a("--idle-threshold", metavar="PERCENT", help="GPU utilisation below this is idle (env IDLE_THRESHOLD; 5)")
    a("--check-interval", metavar="SECONDS", help="seconds between checks, fractions allowed (env CHECK_INTERVAL; 60)")
    a("--idle-limit", metavar="N", help="consecutive idle checks before stopping (env IDLE_LIMIT; 5)")
    a("--min-runtime", metavar="SECONDS", help="never stop a pod younger than this (env MIN_RUNTIME; 600)")
    a("--action", help="stop (default; disk kept) or terminate (env WATCHDOG_ACTION)")
    a("--source", help="GPU utilisation from nvml (default), runpod (API, for a separate server) or none (env WATCHDOG_SOURCE)")
    a("--jupyter-url", help="Jupyter Server base URL, e.g. http://127.0.0.1:8888 (env JUPYTER_URL)")
    a("--jupyter-token", help="Jupyter token (env JUPYTER_TOKEN); never logged")
    a("--health-url", help="health endpoint answering JSON busy/last_activity (env HEALTH_URL)")
    a("--activity-file", help="reviewkit activity file (env REVIEWKIT_ACTIVITY_FILE; ~/.cache/reviewkit/activity.json)")
    a("--state-file", help="state file (env WATCHDOG_STATE_FILE; ~/.cache/reviewkit/watchdog-state.json)")
    a("--api-timeout", metavar="SECONDS", help="deadline for one RunPod API call (env RUNPOD_API_TIMEOUT; 30)")
    a("--log-file", help="also append the log to this file")
    a("--once", action="store_true", help="one check, then exit (for cron); state in --state-file")
    a("--dry-run", action="store_true", help="log what would be done; never call the RunPod API")
    a("--utilization-trace", metavar="CSV", help="replay this trace instead of NVML (one row per check)")
    a("--simulate", action="store_true", help="with a trace: use trace time, no sleeping; print a summary")
    return p


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def _pick(args: argparse.Namespace, dest: str, env: str, default: Any = None) -> Any:
    flag = getattr(args, dest)
    if flag is not None:
        return flag
    value = _env(env)
    return value if value is not None else default


def resolve(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` and the environment into a validated namespace (exit 2 if invalid)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    err = parser.error
    preset = _pick(args, "preset", "WATCHDOG_PRESET", "default")
    if preset not in PRESETS:
        err(f"argument --preset: invalid choice {preset!r} (choose from {', '.join(PRESETS)})")
    args.preset = preset
    base = dict(PRESETS[preset], api_timeout=30.0)
    for n in _NUMBERS:
        flag, env = getattr(args, n.dest), _env(n.env)
        raw, origin = (flag, f"argument {n.flag}") if flag is not None else (env, f"{n.env} (for {n.flag})")
        if raw is None:
            setattr(args, n.dest, n.kind(base[n.dest]))
            continue
        try:
            value = n.kind(raw.strip())
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not n.ok(value):
            err(f"{origin}: invalid value {raw!r}: must be {n.rule}")
        setattr(args, n.dest, value)
    args.action = _pick(args, "action", "WATCHDOG_ACTION", "stop")
    if args.action not in ("stop", "terminate"):
        err(f"argument --action: invalid choice {args.action!r} (choose from stop, terminate)")
    args.source = _pick(args, "source", "WATCHDOG_SOURCE", "nvml")
    if args.source not in ("nvml", "runpod", "none"):
        err(f"argument --source: invalid choice {args.source!r} (choose from nvml, runpod, none)")
    args.api_key = _pick(args, "api_key", "RUNPOD_API_KEY")
    args.pod_id = _pick(args, "pod_id", "RUNPOD_POD_ID")
    args.jupyter_url = _pick(args, "jupyter_url", "JUPYTER_URL")
    args.jupyter_token = _pick(args, "jupyter_token", "JUPYTER_TOKEN")
    args.health_url = _pick(args, "health_url", "HEALTH_URL")
    explicit_activity = args.activity_file is not None
    args.activity_file = _pick(args, "activity_file", "REVIEWKIT_ACTIVITY_FILE")
    args.use_activity = explicit_activity or not args.simulate
    args.state_file = Path(_pick(args, "state_file", "WATCHDOG_STATE_FILE") or default_state_path()).expanduser()
    for opt, url in (("--jupyter-url", args.jupyter_url), ("--health-url", args.health_url)):
        if url is not None and not re.match(r"^https?://[^/\s]+", url):
            err(f"argument {opt}: invalid URL {url!r} (expected http://host:port...)")
    if args.pod_id is not None and not _POD_ID.match(args.pod_id):
        err(f"argument --pod-id: invalid pod id {args.pod_id!r} (letters, digits, - and _ only)")
    if args.simulate and not args.utilization_trace:
        err("argument --simulate: needs --utilization-trace FILE")
    if args.utilization_trace and args.source == "runpod":
        err("argument --utilization-trace: cannot be combined with --source runpod")
    needs_api = not args.dry_run or args.source == "runpod"
    if needs_api and not args.api_key:
        err("argument --api-key: missing RunPod API key (pass --api-key or set RUNPOD_API_KEY"
            + (")" if args.dry_run else ", or use --dry-run)"))
    if needs_api and not args.pod_id:
        err("argument --pod-id: missing pod id (pass --pod-id or set RUNPOD_POD_ID"
            + (")" if args.dry_run else ", or use --dry-run)"))
    if needs_api and importlib.util.find_spec("runpod") is None:
        err("the runpod SDK is not installed (pip install runpod); use --dry-run to watch without it")
    if args.utilization_trace:
        try:
            args.trace = TraceReader(args.utilization_trace)
        except TraceFormatError as exc:
            err(f"argument --utilization-trace: {exc}")
    else:
        args.trace = None
    return args


def setup_logging(log_file: str | None = None) -> logging.Logger:
    """The watchdog's own logger in the seed's format (the SDK touches the root logger)."""
    log = logging.getLogger("reviewkit.watchdog")
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
    formatter = logging.Formatter(LOG_FORMAT, DATE_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        log.addHandler(handler)
    return log


def _signals(args: argparse.Namespace, client: Any) -> list[Signal]:
    signals: list[Signal] = []
    if args.trace is not None:
        signals.append(GpuSignal(args.trace, args.idle_threshold))
    elif args.source == "nvml":
        signals.append(GpuSignal(NvmlReader(), args.idle_threshold))
    elif args.source == "runpod":
        signals.append(GpuSignal(RunPodReader(client), args.idle_threshold))
    if args.jupyter_url:
        signals.append(JupyterSignal(args.jupyter_url, args.jupyter_token))
    if args.health_url:
        signals.append(HealthSignal(args.health_url))
    if args.use_activity:
        signals.append(ActivityFileSignal(args.activity_file))
    return signals


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _drain(trace: TraceReader, threshold: float, result: SimulationResult) -> None:
    """Append the trace rows after the stop, so the summary can say what was saved."""
    gpu = GpuSignal(trace, threshold)
    while True:
        try:
            now = trace.next_time()
        except TraceEnded:
            return
        reading = gpu.read()
        result.timeline.append(TimelineRow(now, reading.values, reading.status, 0, AFTER_STOP))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the watchdog; returns the exit status (0 done, 1 stop failed, 2 usage)."""
    try:
        args = resolve(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    log = setup_logging(args.log_file)
    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(args, log)
    except KeyboardInterrupt:
        log.info("Watchdog interrupted; pod %s left running", args.pod_id or "(none)")
        return 130
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


def _run(args: argparse.Namespace, log: logging.Logger) -> int:
    """Start-up, then the loop (or one check); SIGTERM/Ctrl-C arrive as KeyboardInterrupt."""
    client = None
    if not args.dry_run or args.source == "runpod":
        from reviewkit.watchdog.action import RunPodClient

        client = RunPodClient(args.api_key, args.pod_id, timeout=args.api_timeout)
    policy = IdlePolicy(args.idle_threshold, args.check_interval, args.idle_limit, args.min_runtime)
    mode = "simulate" if args.simulate else "once" if args.once else "loop"
    source = "trace " + str(args.utilization_trace) if args.trace is not None else args.source
    log.info(
        "Watchdog started: pod %s, threshold %g%%, interval %gs, idle limit %d, min runtime %gs, "
        "action %s, GPU source %s, mode %s%s",
        args.pod_id or "(none)", policy.idle_threshold, policy.check_interval, policy.idle_limit,
        policy.min_runtime, args.action, source, mode, ", dry-run" if args.dry_run else "",
    )
    clock = "trace" if args.simulate else "wall"
    trace: TraceReader | None = args.trace
    use_state = args.once or not args.simulate
    if use_state:
        now = trace.next_time() if args.simulate and trace is not None else time.time()
        state = load_state(args.state_file, pod_id=args.pod_id, clock=clock, now=now,
                           interval=policy.check_interval, log=log)
        if trace is not None and args.once:
            trace.position = state.trace_row
    else:
        state = WatchdogState(pod_id=args.pod_id, clock=clock)

    from reviewkit.watchdog.monitor import FAILED, Monitor

    monitor = Monitor(
        policy=policy, signals=_signals(args, client), state=state, pod_id=args.pod_id,
        client=client, action=args.action, dry_run=args.dry_run, api_uptime=not args.simulate,
        state_path=args.state_file if use_state else None, time_prefix=args.simulate, log=log,
        trace=trace,
    )
    result = SimulationResult(start=trace.start_time if trace else 0.0, end=trace.end_time if trace else 0.0)
    while True:
        started = time.monotonic()
        try:
            now = trace.next_time() if args.simulate and trace is not None else time.time()
            check = monitor.check(now, time.time())
        except TraceEnded:
            log.info("Utilization trace ended after %d rows; watchdog exits", len(trace.rows) if trace else 0)
            if args.simulate:
                print(result.summary(), flush=True)
            return 1 if state.stop_failures else 0
        except Exception:  # noqa: BLE001 - a watchdog that dies bills forever
            log.exception("Check failed unexpectedly; the watchdog keeps running")
            if args.once or args.simulate:
                return 1
            time.sleep(policy.check_interval)
            continue
        result.timeline.append(check.timeline_row())
        if check.final:
            if args.simulate and trace is not None:
                result.stop_time = check.time
                _drain(trace, policy.idle_threshold, result)
                print(result.summary(), flush=True)
            return 0
        if args.once:
            return 1 if check.outcome == FAILED else 0
        if not args.simulate:
            time.sleep(max(0.0, policy.check_interval - (time.monotonic() - started)))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
