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
import time
from typing import Any, Callable, Sequence

from reviewkit.watchdog.logs import setup_logging
from reviewkit.watchdog.options import Parser, add_options, apply, require_credentials
from reviewkit.watchdog.optiontable import COMMAND_OPTIONS
from reviewkit.watchdog.policy import backoff_delay

DESCRIPTIONS = {
    "start": "Resume a stopped pod (runpod.resume_pod), with retries.",
    "stop": "Stop a running pod (runpod.stop_pod), with retries.",
    "status": "The pod's status and price, and the idle watchdog's state.",
}


def build_parser(command: str) -> Parser:
    parser = Parser(prog=f"watchdog.py {command}", description=DESCRIPTIONS[command])
    add_options(parser, COMMAND_OPTIONS[command])
    return parser


def resolve(command: str, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` and the environment for ``command`` (exit 2 if invalid)."""
    parser = build_parser(command)
    args = parser.parse_strict(argv)
    apply(parser, args, COMMAND_OPTIONS[command])
    require_credentials(parser, args)
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
