"""The command line of the idle watchdog: parsing and validating :mod:`.optiontable`'s options.

Every setting resolves flag > environment variable > ``--preset`` > the seed's
default, and is validated here so a typo exits with status 2 naming the option
(and the variable, when the value came from the environment) instead of surfacing
as a watchdog that never stops the pod. No abbreviations are accepted (``--api=KEY``
is not ``--api-key``), and no error message echoes a secret: the API key, the
Jupyter token and the value of any unknown ``--option=value`` are replaced by
``***``. ``--action terminate`` (which deletes the pod's volume) is only taken from
the command line, never from the environment alone. What each option is (flag,
variable, default, help, valid values) is defined once, in :mod:`.optiontable`;
what depends on several options (peak hours, a trace, credentials) is checked here.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, NoReturn, Sequence

from reviewkit.watchdog.optiontable import API_KEY, OPTIONS, POD_ID, PRESET, PRESETS, Option
from reviewkit.watchdog.peak import PeakHours, load_zone, parse_window
from reviewkit.watchdog.state import default_state_path
from reviewkit.watchdog.trace import TraceFormatError, TraceReader

#: Options whose values are secrets (never echoed).
SECRET_OPTIONS = tuple(o.flag for o in OPTIONS if o.secret)
SECRET_ENV = tuple(o.env for o in OPTIONS if o.secret and o.env)


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


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    """Declare ``options`` on ``parser`` (values stay strings: :func:`apply` checks them)."""
    for o in options:
        if o.switch:
            parser.add_argument(o.flag, action="store_true", help=o.help_text())
        else:
            parser.add_argument(o.flag, metavar=o.metavar, help=o.help_text())


def _env(name: str | None) -> str | None:
    value = os.environ.get(name) if name else None
    return value if value not in (None, "") else None  # empty means unset


def apply(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    options: Iterable[Option],
    defaults: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Set each option's value on ``args``: flag > environment > ``defaults`` > its default.

    Exits 2 (``parser.error``) naming the flag, or the variable and the flag, of the
    first invalid value. Returns where each given value came from (``"flag"`` or
    ``"env"``) by ``dest``; options left at a default are absent.
    """
    origins: dict[str, str] = {}
    for o in options:
        if o.switch:
            continue
        flag, env = getattr(args, o.dest), _env(o.env)
        if flag is None and env is None:
            setattr(args, o.dest, (defaults or {}).get(o.dest, o.default))
            continue
        raw, where = (flag, "flag") if flag is not None else (env, "env")
        origin = f"argument {o.flag}" if where == "flag" else f"{o.env} (for {o.flag})"
        if where == "env" and o.env_refused is not None and raw == o.env_refused[0]:
            parser.error(
                f"{o.env}={raw} is refused: {o.env_refused[1]}, "
                f"so it must be given on the command line ({o.flag} {raw})"
            )
        try:
            setattr(args, o.dest, o.parse(raw))
        except ValueError as exc:
            parser.error(f"{origin}: {exc}")
        origins[o.dest] = where
    return origins


def require_credentials(parser: argparse.ArgumentParser, args: argparse.Namespace, hint: str = "") -> None:
    """Exit 2 when the API key or the pod id is missing (``hint`` ends the message)."""
    for option, what in ((API_KEY, "RunPod API key"), (POD_ID, "pod id")):
        if not getattr(args, option.dest):
            parser.error(f"argument {option.flag}: missing {what} (pass {option.flag} or set {option.env}{hint})")


def build_parser() -> Parser:
    parser = Parser(
        prog="watchdog.py",
        description="Stop (or terminate) a RunPod pod once its GPUs, Jupyter kernels and "
        "reviewkit runs have been idle for IDLE_LIMIT consecutive checks. "
        "Subcommands for cron: watchdog.py start|stop|status --pod-id ID (see start --help).",
    )
    add_options(parser, OPTIONS)
    return parser


def resolve(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` and the environment into a validated namespace (exit 2 if invalid)."""
    parser = build_parser()
    args = parser.parse_strict(argv)
    if args.simulate:
        args.dry_run = True  # a replay shows what would happen; it never stops the pod
    given = apply(parser, args, [PRESET])
    given |= apply(parser, args, [o for o in OPTIONS if o is not PRESET], dict(PRESETS[args.preset]))
    args.use_activity = given.get("activity_file") == "flag" or not args.simulate
    args.use_jupyter = args.jupyter_url is not None or not args.simulate
    args.state_file = Path(args.state_file or default_state_path()).expanduser()
    args.peak = _peak(args, given, parser.error)
    _check_combinations(args, parser)
    args.trace = None
    if args.utilization_trace:
        try:
            args.trace = TraceReader(args.utilization_trace)
        except TraceFormatError as exc:
            parser.error(f"argument --utilization-trace: {exc}")
    return args


def _check_combinations(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    err = parser.error
    if args.simulate and not args.utilization_trace:
        err("argument --simulate: needs --utilization-trace FILE")
    if args.utilization_trace and args.source == "runpod":
        err("argument --utilization-trace: cannot be combined with --source runpod")
    if args.peak is not None and args.simulate:
        err("argument --peak-hours: cannot be combined with --simulate (a trace has no time of day)")
    if args.dry_run and args.source != "runpod":
        return  # no API call at all
    require_credentials(parser, args, "" if args.dry_run else ", or use --dry-run")
    if importlib.util.find_spec("runpod") is None:
        err("the runpod SDK is not installed (pip install runpod); use --dry-run to watch without it")


def _peak(args: argparse.Namespace, given: dict[str, str], err: Callable[[str], NoReturn]) -> PeakHours | None:
    if args.peak_hours is None:
        if given.get("peak_preset") == "flag" or given.get("timezone") == "flag":
            err("argument --peak-preset/--timezone: needs --peak-hours HH:MM-HH:MM")
        return None
    try:
        start, end = parse_window(args.peak_hours)
    except ValueError as exc:
        err(f"argument --peak-hours: {exc}")
    try:
        zone = load_zone(args.timezone)
    except ValueError as exc:
        err(f"argument --timezone: {exc}")
    return PeakHours(start, end, args.peak_preset, zone, args.timezone or "local time")
