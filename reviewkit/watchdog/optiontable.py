"""Every option of ``watchdog.py``, defined once: flag, variable, default, help, rule.

The parser and ``--help`` (:mod:`.options`, :mod:`.commands`), the seed's presets,
:class:`~reviewkit.watchdog.policy.IdlePolicy`'s defaults, the monitor's unknown
grace and the option tables of README.md and docs/watchdog.md all read
:data:`OPTIONS`, so an option cannot have one default in ``--help`` and another in
the code (``tests/watchdog/test_watchdog_option_table.py`` compares both tables with
:func:`markdown_table`). Pure data and the standard library: the policy imports it.

To add an option, add a row here; :func:`reviewkit.watchdog.options.resolve` reads
it by flag > environment variable > preset > default, and the README/docs tables
are regenerated with ``python -c "from reviewkit.watchdog.optiontable import
markdown_table; print(markdown_table())"``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

#: The seed's presets, in the order of :attr:`Option.presets`.
PRESET_NAMES = ("aggressive", "default", "conservative")
#: ``--peak-preset off``: no stopping during peak hours.
OFF = "off"


@dataclass(frozen=True)
class Option:
    """One option. ``help`` is the text of ``--help`` and of the tables' meaning column.

    A value is checked by ``kind`` + ``valid`` (a finite number; ``rule`` says what
    is valid), by ``choices``, or by ``pattern`` (``rule`` says what matches). The
    seed's numeric settings have ``presets`` (one value per :data:`PRESET_NAMES`),
    and their default is the ``default`` preset's value.
    """

    flag: str
    help: str
    env: str | None = None
    default: Any = None
    shown: str | None = None  # the default as the tables write it, when not the value itself
    kind: Callable[[str], Any] | None = None  # float or int
    valid: Callable[[Any], bool] | None = None
    rule: str = ""
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    noun: str = "value"  # "invalid URL ...", "invalid pod id ..."
    metavar: str | None = None
    presets: tuple[Any, ...] = ()
    switch: bool = False  # a flag without a value (``--once``)
    secret: bool = False  # never echoed
    env_refused: tuple[str, str] | None = None  # (value, why): accepted from the command line only

    def __post_init__(self) -> None:
        if self.presets:
            object.__setattr__(self, "default", self.presets[PRESET_NAMES.index("default")])

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    def parse(self, raw: str) -> Any:
        """The value written ``raw``; ``ValueError`` saying what is wrong (with ``raw`` repr'd)."""
        if self.kind is not None:
            try:
                value = self.kind(raw.strip())
            except ValueError:
                value = None
            if value is None or not math.isfinite(value) or (self.valid is not None and not self.valid(value)):
                raise ValueError(f"invalid value {raw!r}: must be {self.rule}")
            return value
        if self.choices and raw not in self.choices:
            raise ValueError(f"invalid choice {raw!r} (choose from {', '.join(self.choices)})")
        if self.pattern is not None and not re.match(self.pattern, raw):
            raise ValueError(f"invalid {self.noun} {raw!r} ({self.rule})")
        return raw

    def shown_default(self) -> str:
        """The default as the tables write it (markdown)."""
        if self.shown is not None:
            return self.shown
        if self.switch or self.default is None:
            return "–"
        if isinstance(self.default, str):
            return f"`{self.default}`"
        return f"{self.default:g}"

    def help_text(self) -> str:
        """``--help``'s line: the help, its variable and its default, without markdown."""
        extra = [f"env {self.env}"] if self.env else []
        if self.shown_default() != "–":
            extra.append(f"default {self.shown_default()}")
        text = self.help + (f" ({'; '.join(extra)})" if extra else "")
        return text.replace("`", "").replace("%", "%%")  # argparse %-formats help


def _seconds(minimum: str) -> str:
    return f"a number of seconds {minimum}"


_URL = r"^https?://[^/\s]+"
_URL_RULE = "expected http://host:port..."

API_KEY = Option("--api-key", "RunPod API key; never logged", env="RUNPOD_API_KEY", secret=True)
POD_ID = Option(
    "--pod-id",
    "the pod; RunPod sets it inside every pod",
    env="RUNPOD_POD_ID",
    pattern=r"^[A-Za-z0-9_-]+$",
    noun="pod id",
    rule="letters, digits, - and _ only",
)
PRESET = Option(
    "--preset",
    "the seed's preset: " + ", ".join(f"`{name}`" for name in PRESET_NAMES),
    env="WATCHDOG_PRESET",
    default="default",
    choices=PRESET_NAMES,
)
API_TIMEOUT = Option(
    "--api-timeout",
    "deadline (s) for one RunPod API call",
    env="RUNPOD_API_TIMEOUT",
    default=30.0,
    kind=float,
    valid=lambda v: v > 0,
    rule=_seconds("above 0"),
    metavar="SECONDS",
)
STATE_FILE = Option(
    "--state-file",
    "state between checks and runs",
    env="WATCHDOG_STATE_FILE",
    shown="`~/.cache/reviewkit/watchdog-state.json`",
)
LOG_FILE = Option("--log-file", "also append the log to this file")
DRY_RUN = Option("--dry-run", "log what would be done; never call the RunPod API", switch=True)

#: The options of ``watchdog.py`` (the watch, not the start/stop/status commands), in ``--help`` order.
OPTIONS: tuple[Option, ...] = (
    API_KEY,
    POD_ID,
    PRESET,
    Option(
        "--idle-threshold",
        "GPU utilisation (%) below which a GPU is idle",
        env="IDLE_THRESHOLD",
        presets=(5.0, 5.0, 3.0),
        kind=float,
        valid=lambda v: 0 < v <= 100,
        rule="a percentage above 0 and at most 100",
        metavar="PERCENT",
    ),
    Option(
        "--check-interval",
        "seconds between checks (fractions allowed)",
        env="CHECK_INTERVAL",
        presets=(60.0, 60.0, 60.0),
        kind=float,
        valid=lambda v: v > 0,
        rule=_seconds("above 0"),
        metavar="SECONDS",
    ),
    Option(
        "--idle-limit",
        "consecutive idle checks before stopping",
        env="IDLE_LIMIT",
        presets=(3, 5, 10),
        kind=int,
        valid=lambda v: v >= 1,
        rule="a whole number of checks, at least 1",
        metavar="N",
    ),
    Option(
        "--min-runtime",
        "never stop a pod younger than this (seconds)",
        env="MIN_RUNTIME",
        presets=(300.0, 600.0, 1800.0),
        kind=float,
        valid=lambda v: v >= 0,
        rule=_seconds("at least 0"),
        metavar="SECONDS",
    ),
    Option(
        "--action",
        "`stop` (disk kept, still billed for storage) or `terminate` (pod and volume deleted: "
        "only accepted on the command line; `WATCHDOG_ACTION=terminate` alone is refused)",
        env="WATCHDOG_ACTION",
        default="stop",
        choices=("stop", "terminate"),
        env_refused=("terminate", "terminate deletes the pod and its volume"),
    ),
    Option(
        "--source",
        "GPU utilisation from `nvml`, `runpod` (the API, from a separate server) or `none` (no GPU signal)",
        env="WATCHDOG_SOURCE",
        default="nvml",
        choices=("nvml", "runpod", "none"),
    ),
    Option(
        "--jupyter-url",
        "Jupyter Server to watch instead of those found in Jupyter's runtime directory (`jpserver-*.json`)",
        env="JUPYTER_URL",
        shown="all found",
        pattern=_URL,
        noun="URL",
        rule=_URL_RULE,
    ),
    Option("--jupyter-token", "its token; never logged", env="JUPYTER_TOKEN", secret=True),
    Option(
        "--health-url",
        "health endpoint answering JSON `busy`/`last_activity`",
        env="HEALTH_URL",
        shown="off",
        pattern=_URL,
        noun="URL",
        rule=_URL_RULE,
    ),
    Option(
        "--activity-file",
        "reviewkit's activity file",
        env="REVIEWKIT_ACTIVITY_FILE",
        shown="`~/.cache/reviewkit/activity.json`",
    ),
    STATE_FILE,
    API_TIMEOUT,
    Option(
        "--unknown-grace",
        "seconds a signal may stay unknown before it is dropped from the vote (with an ERROR)",
        env="WATCHDOG_UNKNOWN_GRACE",
        default=1800.0,
        kind=float,
        valid=lambda v: v >= 0,
        rule=_seconds("at least 0"),
        metavar="SECONDS",
    ),
    Option(
        "--peak-hours",
        "daily window `HH:MM-HH:MM` with another preset, e.g. `09:00-18:00`",
        env="WATCHDOG_PEAK_HOURS",
        shown="off",
        metavar="HH:MM-HH:MM",
    ),
    Option(
        "--peak-preset",
        "preset during peak hours, or `off` (no stopping)",
        env="WATCHDOG_PEAK_PRESET",
        default="conservative",
        choices=(*PRESET_NAMES, OFF),
    ),
    Option(
        "--timezone",
        "IANA time zone of `--peak-hours`, e.g. `Asia/Seoul`",
        env="WATCHDOG_TIMEZONE",
        shown="local time",
    ),
    LOG_FILE,
    Option("--once", "one check, then exit (cron); state in `--state-file`", switch=True),
    DRY_RUN,
    Option("--utilization-trace", "replay this CSV trace instead of NVML (one row per check)", metavar="CSV"),
    Option("--simulate", "with a trace: trace time, no sleeping, a summary; implies `--dry-run`", switch=True),
)

#: ``watchdog.py start|stop|status``: their own options, and those they share with the watch.
ATTEMPTS = Option(
    "--attempts",
    "API attempts before giving up",
    default=5,
    kind=int,
    valid=lambda v: v >= 1,
    rule="a whole number, at least 1",
    metavar="N",
)
RETRY_DELAY = Option(
    "--retry-delay",
    "first delay (s) between attempts, doubling (at most 15 minutes)",
    default=10.0,
    kind=float,
    valid=lambda v: v >= 0,
    rule=_seconds("at least 0"),
    metavar="SECONDS",
)
GPU_COUNT = Option(
    "--gpu-count",
    "GPUs to resume with",
    shown="the pod's own count",
    kind=int,
    valid=lambda v: v >= 1,
    rule="a whole number of GPUs, at least 1",
    metavar="N",
)
_COMMAND_DRY_RUN = replace(DRY_RUN, help="say what would be done; only the status query is sent")
COMMAND_OPTIONS: Mapping[str, tuple[Option, ...]] = {
    "start": (API_KEY, POD_ID, API_TIMEOUT, ATTEMPTS, RETRY_DELAY, _COMMAND_DRY_RUN, GPU_COUNT, LOG_FILE),
    "stop": (API_KEY, POD_ID, API_TIMEOUT, ATTEMPTS, RETRY_DELAY, _COMMAND_DRY_RUN, LOG_FILE),
    "status": (API_KEY, POD_ID, API_TIMEOUT, STATE_FILE, LOG_FILE),
}

BY_DEST: Mapping[str, Option] = {option.dest: option for option in OPTIONS}

#: The seed's presets (``CHECK_INTERVAL`` is 60 s in all of them), from the options' ``presets``.
PRESETS: Mapping[str, Mapping[str, float]] = {
    name: {option.dest: option.presets[i] for option in OPTIONS if option.presets}
    for i, name in enumerate(PRESET_NAMES)
}
#: Default of ``--unknown-grace``: how long a signal may stay unknown before it is dropped.
UNKNOWN_GRACE: float = BY_DEST["unknown_grace"].default


def markdown_table(options: tuple[Option, ...] = OPTIONS) -> str:
    """The option table of README.md and docs/watchdog.md (a test keeps both equal to it)."""
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for o in options:
        rows.append(f"| `{o.flag}` | {f'`{o.env}`' if o.env else '–'} | {o.shown_default()} | {o.help} |")
    return "\n".join(rows)
