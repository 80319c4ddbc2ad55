"""Signals of work on the pod: each answers busy, idle or unknown, with a detail.

The watchdog stops a pod only when every signal it can read says idle, so each
signal errs on the side of "busy" or "unknown": a signal that cannot be read (NVML
error, Jupyter unreachable, corrupt file, a time that cannot be right) says unknown,
which freezes the idle count until ``--unknown-grace`` runs out (see
:mod:`reviewkit.watchdog.monitor`). Only the standard library is imported here; the
GPU signal is in :mod:`.gpu`, Jupyter in :mod:`.jupyter`.

``since`` is the wall-clock time (epoch seconds) of the previous check: a signal
that reports a last-activity time counts activity after ``since`` as work.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from reviewkit import activity as _activity

BUSY = "busy"
IDLE = "idle"
UNKNOWN = "unknown"
#: Only ``--source runpod``: the pod is not running, so there is nothing to stop.
STOPPED = "stopped"

#: A timestamp up to this far in the future is clock skew; further is unknown.
FUTURE_SLACK_SECONDS = 120.0
#: Epoch seconds above this (the year 5138) can only be milliseconds.
_EPOCH_MS_FROM = 1e11


class SignalError(Exception):
    """A signal could not be read; the message says why (never a secret)."""


@dataclass(frozen=True)
class Reading:
    """One signal's answer at one check. ``warn`` asks the caller to log a warning.

    ``values`` are the readable GPU utilisations; ``parts`` names the unreadable
    parts of a partly readable signal (``gpu1``), each with its own unknown grace.
    """

    name: str
    status: str
    detail: str
    values: tuple[float, ...] = ()
    warn: bool = False
    parts: tuple[str, ...] = ()

    @property
    def unknown_keys(self) -> tuple[str, ...]:
        """What is unknown in this reading (keys of the unknown-grace clock)."""
        if self.parts:
            return self.parts
        return (self.name,) if self.status == UNKNOWN else ()

    @property
    def readable(self) -> bool:
        """Did any part of this signal answer?"""
        return self.status != UNKNOWN or bool(self.values)


class Signal(Protocol):
    name: str
    #: What to do when the signal stays unknown (named in the unknown-grace ERROR).
    fix: str

    def read(self, since: float) -> Reading: ...


def format_percentages(values: tuple[float, ...] | list[float]) -> str:
    return ", ".join(f"{v:g}%" for v in values)


def parse_time(value: Any) -> float:
    """Epoch seconds from epoch seconds or an ISO 8601 string with a time zone.

    Raises ``ValueError`` for what cannot be a time: booleans, epoch milliseconds,
    and naive ISO strings (local time or UTC? a pod in Seoul is 9 h off either way).
    """
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, (int, float)):
        stamp = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            stamp = float(text)
        except ValueError:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                raise ValueError(
                    f"{value!r} has no time zone (naive local time?); write epoch seconds or ISO 8601 with Z or +09:00"
                ) from None
            return parsed.timestamp()
    else:
        raise ValueError(f"not a time: {value!r}")
    if stamp >= _EPOCH_MS_FROM:
        raise ValueError(f"{value!r} looks like epoch milliseconds; epoch seconds expected")
    return stamp


def read_time(value: Any, now: float) -> float:
    """:func:`parse_time`, and a time in the future is an error too (clock or units wrong)."""
    stamp = parse_time(value)
    if stamp > now + FUTURE_SLACK_SECONDS:
        raise ValueError(f"{value!r} is {stamp - now:.0f}s in the future")
    return stamp


def get_json(url: str, headers: dict[str, str], timeout: float, *, answers: tuple[int, ...] = ()) -> Any:
    """GET ``url`` as JSON; every failure is a :class:`SignalError` without the query string.

    ``answers``: error statuses whose JSON body is an answer too (reviewkit serve's ``/health``
    says 503 ``engine_dead`` with ``busy: false``).
    """
    request = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
    bare = url.split("?")[0]
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code in answers:
            try:
                return json.loads(exc.read())
            except (OSError, ValueError):
                pass
        raise SignalError(f"HTTP {exc.code} from {bare}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SignalError(f"{bare} unreachable: {reason}") from exc
    try:
        return json.loads(body)
    except ValueError as exc:
        raise SignalError(f"{bare} did not answer JSON") from exc


def ago(when: float, now: float) -> str:
    return f"{max(0.0, now - when):.0f}s ago"


class HealthSignal:
    """The seed's ``/health`` endpoint: JSON with ``busy`` and/or ``last_activity``, also with status 503
    (a server whose engine died answers 503 with ``busy: false``: idle, so its pod is not billed forever)."""

    name = "health"
    fix = "check that --health-url answers JSON with 'busy' or 'last_activity', or drop --health-url"

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout

    def read(self, since: float) -> Reading:
        try:
            data = get_json(self.url, {}, self.timeout, answers=(503,))
        except SignalError as exc:
            return Reading(self.name, UNKNOWN, str(exc))
        if not isinstance(data, dict):
            return Reading(self.name, UNKNOWN, "health answer is not a JSON object")
        busy = data.get("busy")
        if busy is True:
            return Reading(self.name, BUSY, "busy")
        raw = data.get("last_activity")
        if raw is not None:
            now = time.time()
            try:
                stamp = read_time(raw, now)
            except (TypeError, ValueError) as exc:
                return Reading(self.name, UNKNOWN, f"impossible last_activity: {exc}", warn=True)
            if stamp > since:
                return Reading(self.name, BUSY, f"activity {ago(stamp, now)}")
            return Reading(self.name, IDLE, f"last activity {ago(stamp, now)}")
        if busy is False:
            return Reading(self.name, IDLE, "not busy")
        return Reading(self.name, UNKNOWN, "answer has neither 'busy' nor 'last_activity'")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: exists, owned by someone else
        return True
    return True


class ActivityFileSignal:
    """reviewkit's activity file (:mod:`reviewkit.activity`).

    Busy with a live pid and a fresh heartbeat is work; ``updated`` after the last
    check is work (an analysis ended in between); a busy record with a dead pid or a
    heartbeat older than ``STALE_AFTER_SECONDS`` is a crashed run: idle, with a
    warning. No file means reviewkit never ran here: idle. An ``updated`` time in
    the future (or in milliseconds) is unknown, with a warning, not busy for hours.
    """

    name = "activity"

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = _activity.activity_path(path)
        self.fix = (
            f"make {self.path} readable (or delete it), and point the notebook and the "
            f"watchdog at the same file with {_activity.ENV_VAR} or --activity-file"
        )

    def read(self, since: float) -> Reading:
        try:
            record = _activity.read_activity(self.path)
        except (OSError, ValueError) as exc:
            return Reading(self.name, UNKNOWN, f"unreadable activity file: {exc}")
        if record is None:
            return Reading(self.name, IDLE, "no activity file")
        now = time.time()
        try:
            updated = read_time(record.get("updated"), now)
        except (TypeError, ValueError) as exc:
            return Reading(self.name, UNKNOWN, f"{self.path}: impossible 'updated' time: {exc}", warn=True)
        label = record.get("label") or "analyze"
        stale = None
        if record.get("state") == "busy":
            pid, host = record.get("pid"), record.get("host")
            if now - updated > _activity.STALE_AFTER_SECONDS:
                stale = f"heartbeat {ago(updated, now)}"
            elif isinstance(pid, int) and host in (None, socket.gethostname()) and not _pid_alive(pid):
                stale = f"pid {pid} is gone"
            if stale is None:
                return Reading(self.name, BUSY, f"reviewkit {label} running (pid {pid})")
        if updated > since:
            return Reading(self.name, BUSY, f"reviewkit active {ago(updated, now)}")
        if stale is not None:
            return Reading(self.name, IDLE, f"stale busy record ({stale}); treated as idle", warn=True)
        return Reading(self.name, IDLE, f"reviewkit idle, last active {ago(updated, now)}")
