"""Command line of the idle watchdog (``python watchdog.py``, ``reviewkit-watchdog``).

``watchdog.py [options]`` watches the pod (options in :mod:`.options`);
``watchdog.py start|stop|status --pod-id ID`` are the scheduled commands of
:mod:`.commands`. Exit status: 0 done, 1 a stop call failed (retried later), 2 bad
options, 3 (``--once``) no signal readable at all, 4 another watchdog owns the
state file, 130 interrupted. Imports stay light: no vllm, torch, pandas or numpy;
the runpod SDK only when the API is used.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from typing import Any, Sequence

from reviewkit import activity
from reviewkit.watchdog.gpu import GpuSignal, NvmlReader, RunPodReader
from reviewkit.watchdog.jupyter import JupyterSignal, runtime_dir
from reviewkit.watchdog.logs import setup_logging
from reviewkit.watchdog.options import resolve
from reviewkit.watchdog.policy import IdlePolicy
from reviewkit.watchdog.signals import ActivityFileSignal, HealthSignal, Signal
from reviewkit.watchdog.simulate import AFTER_STOP, SimulationResult, TimelineRow
from reviewkit.watchdog.state import StateLock, WatchdogState, load_state
from reviewkit.watchdog.trace import TraceEnded, TraceReader

#: How long a ``--once`` run waits for the state file's lock before skipping its check.
ONCE_LOCK_WAIT = 60.0
#: The longest sleep between two NVML polls inside one check interval.
POLL_SECONDS = 5.0
COMMANDS = ("start", "stop", "status")


def _signals(args: argparse.Namespace, client: Any) -> list[Signal]:
    signals: list[Signal] = []
    if args.trace is not None:
        signals.append(GpuSignal(args.trace, args.idle_threshold))
    elif args.source == "nvml":
        signals.append(GpuSignal(NvmlReader(), args.idle_threshold))
    elif args.source == "runpod":
        signals.append(GpuSignal(RunPodReader(client), args.idle_threshold))
    if args.use_jupyter:
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
    """Run the watchdog (or a subcommand); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        from reviewkit.watchdog.commands import run_command

        return run_command(argv[0], argv[1:])
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
    use_state = args.once or not args.simulate
    lock = StateLock(args.state_file)
    if use_state and not lock.acquire(ONCE_LOCK_WAIT if args.once else 0.0):
        if args.once:
            log.info("Another watchdog (pid %s) holds %s; this check is skipped", lock.holder(), lock.path)
            return 0
        log.error(
            "Another watchdog (pid %s) already watches with state file %s; exiting "
            "(one watchdog per pod: stop the other one or give this one its own --state-file)",
            lock.holder(),
            args.state_file,
        )
        return 4
    try:
        return _watch(args, log)
    finally:
        lock.release()


def _watch(args: argparse.Namespace, log: logging.Logger) -> int:
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
        args.pod_id or "(none)",
        policy.idle_threshold,
        policy.check_interval,
        policy.idle_limit,
        policy.min_runtime,
        args.action,
        source,
        mode,
        ", dry-run" if args.dry_run else "",
    )
    if args.use_activity:
        log.info(
            "Activity file: %s (the notebook must use the same path: %s)",
            activity.activity_path(args.activity_file),
            activity.ENV_VAR,
        )
    if args.use_jupyter:
        log.info("Jupyter: %s", args.jupyter_url or f"servers found in {runtime_dir()}")
    if args.peak is not None:
        log.info(
            "Peak hours %s: %s",
            args.peak.describe(),
            "no stopping" if args.peak.preset == "off" else f"preset {args.peak.preset}",
        )
    clock = "trace" if args.simulate else "wall"
    trace: TraceReader | None = args.trace
    use_state = args.once or not args.simulate
    if use_state:
        now = trace.next_time() if args.simulate and trace is not None else time.time()
        state = load_state(
            args.state_file, pod_id=args.pod_id, clock=clock, now=now, interval=policy.check_interval, log=log
        )
        if trace is not None and args.once:
            trace.position = state.trace_row
    else:
        state = WatchdogState(pod_id=args.pod_id, clock=clock)

    from reviewkit.watchdog.monitor import FAILED, Monitor

    monitor = Monitor(
        policy=policy,
        signals=_signals(args, client),
        state=state,
        pod_id=args.pod_id,
        client=client,
        action=args.action,
        dry_run=args.dry_run,
        api_uptime=not args.simulate,
        state_path=args.state_file if use_state else None,
        time_prefix=args.simulate,
        log=log,
        trace=trace,
        unknown_grace=args.unknown_grace,
        peak=args.peak,
    )
    # From a separate server the watchdog outlives the pod: after a stop it keeps
    # watching, so a resumed pod is stopped again once idle.
    keep_watching = args.source == "runpod" and not args.dry_run
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
        if check.final and not keep_watching:
            if args.simulate and trace is not None:
                result.stop_time = check.time
                _drain(trace, policy.idle_threshold, result)
                print(result.summary(), flush=True)
            return 0
        if args.once:
            return 3 if check.unreadable else 1 if check.outcome == FAILED else 0
        if not args.simulate:
            _sleep_polling(monitor, policy.check_interval - (time.monotonic() - started))


def _sleep_polling(monitor: Any, seconds: float) -> None:
    """Sleep until the next check, polling the GPU so the whole interval is judged."""
    end = time.monotonic() + max(0.0, seconds)
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(POLL_SECONDS, left))
        if end - time.monotonic() > 0.5:
            monitor.poll()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
