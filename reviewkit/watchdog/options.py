"""Options of the idle watchdog: flags, environment, presets, validation.

Every setting resolves flag > environment variable > ``--preset`` > the seed's
default, and is validated here so a typo exits with status 2 naming the option
instead of surfacing as a watchdog that never stops the pod. No abbreviations are
accepted (``--api=KEY`` is not ``--api-key``), and no error message echoes a secret:
the API key, the Jupyter token and the value of any unknown ``--option=value`` are
replaced by ``***``. ``--action terminate`` (which deletes the pod's volume) is only
taken from the command line, never from the environment alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from reviewkit.watchdog.monitor import UNKNOWN_GRACE
from reviewkit.watchdog.peak import OFF, PeakHours, load_zone, parse_window
from reviewkit.watchdog.policy import PRESETS
from reviewkit.watchdog.state import default_state_path
from reviewkit.watchdog.trace import TraceFormatError, TraceReader

_POD_ID = re.compile(r"^[A-Za-z0-9_-]+$")
#: Options whose values are secrets (never echoed).
SECRET_OPTIONS = ("--api-key", "--jupyter-token")
SECRET_ENV = ("RUNPOD_API_KEY", "JUPYTER_TOKEN")


class Parser(argparse.ArgumentParser):
    """argparse without abbreviations whose errors never echo a secret value."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)
        self.secrets: list[str] = []

    def error(self, message: str) -> NoReturn:
        for secret in sorted(self.secrets, key=len, reverse=True):
            message = message.replace(secret, "***")
        super().error(message)

    def parse_strict(self, argv: Sequence[str] | None) -> argparse.Namespace:
        """Parse, reporting unknown arguments by name only (a stray value may be a key)."""
        argv = list(sys.argv[1:] if argv is None else argv)
        self.secrets = secret_values(argv, self)
        args, extras = self.parse_known_args(argv)
        if extras:
            shown = [
                t.split("=", 1)[0] + ("=***" if "=" in t else "") if t.startswith("-") else "(a value)" for t in extras
            ]
            self.error("unrecognized arguments: " + " ".join(shown))
        return args


def secret_values(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """The values in ``argv`` and the environment that must never be printed."""
    known = set(parser._option_string_actions)  # noqa: SLF001 - argparse has no public view
    found = [os.environ[name] for name in SECRET_ENV if os.environ.get(name)]
    for i, token in enumerate(argv):
        name, eq, value = token.partition("=")
        if name in SECRET_OPTIONS and not eq and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif eq and token.startswith("-") and (name in SECRET_OPTIONS or name not in known):
            found.append(value)
    return [s for s in found if len(s) >= 4]


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
    _Number(
        "idle_threshold",
        "--idle-threshold",
        "IDLE_THRESHOLD",
        float,
        lambda v: 0 < v <= 100,
        "a percentage above 0 and at most 100",
    ),
    _Number("check_interval", "--check-interval", "CHECK_INTERVAL", float, _positive, "a number of seconds above 0"),
    _Number("idle_limit", "--idle-limit", "IDLE_LIMIT", int, lambda v: v >= 1, "a whole number of checks, at least 1"),
    _Number("min_runtime", "--min-runtime", "MIN_RUNTIME", float, lambda v: v >= 0, "a number of seconds, at least 0"),
    _Number("api_timeout", "--api-timeout", "RUNPOD_API_TIMEOUT", float, _positive, "a number of seconds above 0"),
    _Number(
        "unknown_grace",
        "--unknown-grace",
        "WATCHDOG_UNKNOWN_GRACE",
        float,
        lambda v: v >= 0,
        "a number of seconds, at least 0",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="watchdog.py",
        description="Stop (or terminate) a RunPod pod once its GPUs, Jupyter kernels and "
        "reviewkit runs have been idle for IDLE_LIMIT consecutive checks. "
        "Subcommands for cron: watchdog.py start|stop|status --pod-id ID (see start --help).",
    )
    a = p.add_argument
    a("--api-key", help="RunPod API key (env RUNPOD_API_KEY); never logged")
    a("--pod-id", help="pod to stop (env RUNPOD_POD_ID, set by RunPod inside every pod)")
    a("--preset", help="seed preset: " + ", ".join(PRESETS) + " (env WATCHDOG_PRESET; default: default)")
    a("--idle-threshold", metavar="PERCENT", help="GPU utilisation below this is idle (env IDLE_THRESHOLD; 5)")
    a("--check-interval", metavar="SECONDS", help="seconds between checks, fractions allowed (env CHECK_INTERVAL; 60)")
    a("--idle-limit", metavar="N", help="consecutive idle checks before stopping (env IDLE_LIMIT; 5)")
    a("--min-runtime", metavar="SECONDS", help="never stop a pod younger than this (env MIN_RUNTIME; 600)")
    a("--action", help="stop (default; disk kept) or terminate (pod and volume deleted; command line only)")
    a(
        "--source",
        help="GPU utilisation from nvml (default), runpod (API, for a separate server) or none (env WATCHDOG_SOURCE)",
    )
    a(
        "--jupyter-url",
        help="watch this Jupyter Server (env JUPYTER_URL); default: every server found "
        "in Jupyter's runtime directory (jpserver-*.json)",
    )
    a("--jupyter-token", help="Jupyter token (env JUPYTER_TOKEN); never logged")
    a("--health-url", help="health endpoint answering JSON busy/last_activity (env HEALTH_URL)")
    a("--activity-file", help="reviewkit activity file (env REVIEWKIT_ACTIVITY_FILE; ~/.cache/reviewkit/activity.json)")
    a("--state-file", help="state file (env WATCHDOG_STATE_FILE; ~/.cache/reviewkit/watchdog-state.json)")
    a("--api-timeout", metavar="SECONDS", help="deadline for one RunPod API call (env RUNPOD_API_TIMEOUT; 30)")
    a(
        "--unknown-grace",
        metavar="SECONDS",
        help="a signal unknown this long is dropped from the vote with an ERROR (env WATCHDOG_UNKNOWN_GRACE; 1800)",
    )
    a(
        "--peak-hours",
        metavar="HH:MM-HH:MM",
        help="daily window with another preset, e.g. 09:00-18:00 (env WATCHDOG_PEAK_HOURS)",
    )
    a(
        "--peak-preset",
        help="preset during peak hours: " + ", ".join(PRESETS) + " or off (no stopping); "
        "env WATCHDOG_PEAK_PRESET; default conservative",
    )
    a("--timezone", help="IANA time zone of --peak-hours, e.g. Asia/Seoul (env WATCHDOG_TIMEZONE; local time)")
    a("--log-file", help="also append the log to this file")
    a("--once", action="store_true", help="one check, then exit (for cron); state in --state-file")
    a("--dry-run", action="store_true", help="log what would be done; never call the RunPod API")
    a("--utilization-trace", metavar="CSV", help="replay this trace instead of NVML (one row per check)")
    a("--simulate", action="store_true", help="with a trace: trace time, no sleeping, a summary; implies --dry-run")
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
    args = parser.parse_strict(argv)
    err = parser.error
    if args.simulate:
        args.dry_run = True  # a replay shows what would happen; it never stops the pod
    preset = _pick(args, "preset", "WATCHDOG_PRESET", "default")
    if preset not in PRESETS:
        err(f"argument --preset: invalid choice {preset!r} (choose from {', '.join(PRESETS)})")
    args.preset = preset
    base = dict(PRESETS[preset], api_timeout=30.0, unknown_grace=UNKNOWN_GRACE)
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
    from_flag = args.action is not None
    args.action = _pick(args, "action", "WATCHDOG_ACTION", "stop")
    if args.action not in ("stop", "terminate"):
        err(f"argument --action: invalid choice {args.action!r} (choose from stop, terminate)")
    if args.action == "terminate" and not from_flag:
        err(
            "WATCHDOG_ACTION=terminate is refused: terminate deletes the pod and its volume, "
            "so it must be given on the command line (--action terminate)"
        )
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
    args.use_jupyter = args.jupyter_url is not None or not args.simulate
    args.peak = _peak(args, err)
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
    if args.peak is not None and args.simulate:
        err("argument --peak-hours: cannot be combined with --simulate (a trace has no time of day)")
    needs_api = not args.dry_run or args.source == "runpod"
    if needs_api and not args.api_key:
        err(
            "argument --api-key: missing RunPod API key (pass --api-key or set RUNPOD_API_KEY"
            + (")" if args.dry_run else ", or use --dry-run)")
        )
    if needs_api and not args.pod_id:
        err(
            "argument --pod-id: missing pod id (pass --pod-id or set RUNPOD_POD_ID"
            + (")" if args.dry_run else ", or use --dry-run)")
        )
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


def _peak(args: argparse.Namespace, err: Callable[[str], NoReturn]) -> PeakHours | None:
    window = _pick(args, "peak_hours", "WATCHDOG_PEAK_HOURS")
    preset = _pick(args, "peak_preset", "WATCHDOG_PEAK_PRESET")
    zone_name = _pick(args, "timezone", "WATCHDOG_TIMEZONE")
    if window is None:
        if args.peak_preset is not None or args.timezone is not None:
            err("argument --peak-preset/--timezone: needs --peak-hours HH:MM-HH:MM")
        return None
    try:
        start, end = parse_window(window)
    except ValueError as exc:
        err(f"argument --peak-hours: {exc}")
    preset = preset or "conservative"
    if preset != OFF and preset not in PRESETS:
        err(f"argument --peak-preset: invalid choice {preset!r} (choose from {', '.join(PRESETS)}, off)")
    try:
        zone = load_zone(zone_name)
    except ValueError as exc:
        err(f"argument --timezone: {exc}")
    return PeakHours(start, end, preset, zone, zone_name or "local time")
