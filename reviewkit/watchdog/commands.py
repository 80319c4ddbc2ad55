"""Scheduled pod commands: ``reviewkit-watchdog start|stop|status --pod-id ID``.

For cron lines that start the pod at 09:00 and stop it at 19:00 whatever the idle
watchdog thinks (the seed's cost tips)::

    0 9  * * 1-5  RUNPOD_API_KEY=... reviewkit-watchdog start --pod-id abc123
    0 19 * * 1-5  RUNPOD_API_KEY=... reviewkit-watchdog stop  --pod-id abc123

``start`` resumes the pod (``runpod.resume_pod``, with the pod's own GPU count unless
``--gpu-count``), ``stop`` stops it (``runpod.stop_pod``); each first asks the pod's
status and does nothing when it is already running or stopped. A failed call is
retried like the watchdog's stop (``--retry-delay``, doubling, at most 15 minutes)
up to ``--attempts`` times; the exit status is 0 on success, 1 when every attempt
failed, 2 for bad options. ``status`` prints the pod (desired status, uptime,
$/hour, dollars billed since it started) and the watchdog's state file.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from typing import Any, Callable, Sequence

from reviewkit.watchdog.options import _POD_ID, Parser
from reviewkit.watchdog.policy import backoff_delay


def build_parser(command: str) -> Parser:
    p = Parser(
        prog=f"watchdog.py {command}",
        description={
            "start": "Resume a stopped pod (runpod.resume_pod), with retries.",
            "stop": "Stop a running pod (runpod.stop_pod), with retries.",
            "status": "The pod's status and price, and the idle watchdog's state.",
        }[command],
    )
    a = p.add_argument
    a("--api-key", help="RunPod API key (env RUNPOD_API_KEY); never logged")
    a("--pod-id", help="the pod (env RUNPOD_POD_ID)")
    a("--api-timeout", metavar="SECONDS", default="30", help="deadline for one API call (30)")
    if command != "status":
        a("--attempts", metavar="N", default="5", help="API attempts before giving up (5)")
        a("--retry-delay", metavar="SECONDS", default="10", help="first delay between attempts, doubling (10)")
        a("--dry-run", action="store_true", help="say what would be done; only the status query is sent")
    if command == "start":
        a("--gpu-count", metavar="N", help="GPUs to resume with (default: the pod's own count)")
    if command == "status":
        a("--state-file", help="the watchdog's state file (env WATCHDOG_STATE_FILE)")
    a("--log-file", help="also append the log to this file")
    return p


def _number(
    parser: Parser,
    args: argparse.Namespace,
    dest: str,
    kind: Callable[[str], Any],
    ok: Callable[[Any], bool],
    rule: str,
) -> None:
    raw = getattr(args, dest, None)
    if raw is None:
        return
    try:
        value = kind(str(raw).strip())
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not ok(value):
        parser.error(f"argument --{dest.replace('_', '-')}: invalid value {raw!r}: must be {rule}")
    setattr(args, dest, value)


def resolve(command: str, argv: Sequence[str]) -> argparse.Namespace:
    parser = build_parser(command)
    args = parser.parse_strict(argv)
    args.api_key = args.api_key or os.environ.get("RUNPOD_API_KEY") or None
    args.pod_id = args.pod_id or os.environ.get("RUNPOD_POD_ID") or None
    if not args.api_key:
        parser.error("argument --api-key: missing RunPod API key (pass --api-key or set RUNPOD_API_KEY)")
    if not args.pod_id:
        parser.error("argument --pod-id: missing pod id (pass --pod-id or set RUNPOD_POD_ID)")
    if not _POD_ID.match(args.pod_id):
        parser.error(f"argument --pod-id: invalid pod id {args.pod_id!r} (letters, digits, - and _ only)")
    _number(parser, args, "api_timeout", float, lambda v: v > 0, "a number of seconds above 0")
    _number(parser, args, "attempts", int, lambda v: v >= 1, "a whole number, at least 1")
    _number(parser, args, "retry_delay", float, lambda v: v >= 0, "a number of seconds, at least 0")
    _number(parser, args, "gpu_count", int, lambda v: v >= 1, "a whole number of GPUs, at least 1")
    return args


def _retry(what: str, fn: Callable[[], Any], args: argparse.Namespace, log: logging.Logger) -> Any:
    """Call ``fn`` up to ``--attempts`` times with the watchdog's backoff; re-raise the last ApiError."""
    from reviewkit.watchdog.action import ApiError

    attempts = getattr(args, "attempts", 1)
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except ApiError as exc:
            if attempt == attempts:
                raise
            delay = backoff_delay(attempt, getattr(args, "retry_delay", 0.0))
            log.warning("%s failed (%s); attempt %d of %d, retrying in %gs", what, exc, attempt, attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def run_command(command: str, argv: Sequence[str]) -> int:
    """Run ``start``, ``stop`` or ``status``; returns the exit status."""
    from reviewkit.watchdog.cli import setup_logging

    try:
        args = resolve(command, argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    log = setup_logging(args.log_file)
    from reviewkit.watchdog.action import ApiError, RunPodClient

    client = RunPodClient(args.api_key, args.pod_id, timeout=args.api_timeout)
    try:
        if command == "status":
            return _status(args, client)
        try:
            pod = _retry("pod query", lambda: client.pod_status(), args, log)
        except ApiError as exc:
            if command == "start" and args.gpu_count is None:
                log.error("Pod %s start failed: %s (and no --gpu-count to resume with)", args.pod_id, exc)
                return 1
            log.warning("Pod %s status unknown (%s); sending the %s anyway", args.pod_id, exc, command)
            pod = None
        if pod is not None and pod.running == (command == "start"):
            log.info(
                "Pod %s is already %s (status %s); nothing to do",
                args.pod_id,
                "running" if command == "start" else "stopped",
                pod.desired_status,
            )
            return 0
        if command == "start":
            gpus = args.gpu_count or (pod.gpu_count if pod is not None else None) or 1
            what, call = f"resume with {gpus} GPU(s)", lambda: client.resume(gpus)
        else:
            what, call = "stop", client.stop
        if args.dry_run:
            log.info("[dry-run] would %s pod %s", what, args.pod_id)
            return 0
        log.info("Pod %s: %s", args.pod_id, what)
        try:
            status = _retry(f"Pod {args.pod_id} {command}", call, args, log)
        except ApiError as exc:
            log.error("Pod %s %s failed after %d attempt(s): %s", args.pod_id, command, args.attempts, exc)
            return 1
        log.info("Pod %s %s succeeded (status %s)", args.pod_id, command, status)
        return 0
    except KeyboardInterrupt:
        return 130


def _status(args: argparse.Namespace, client: Any) -> int:
    from reviewkit.watchdog.report import status

    report = status(args.state_file, client=client)
    print(report.summary(), flush=True)
    return 1 if report.api_error else 0
