"""The watchdog's state file: idle count, first start, retry backoff, trace position.

Cron mode (``--once``) runs one check per process, so everything a check needs from
the previous one lives here. The loop writes it too, so a restarted watchdog keeps
the first-start time that stands in for the pod's uptime when the API is silent.

Writes are atomic (temporary file + ``os.replace``): a watchdog killed mid-write
leaves the old state, never half a file. A file that cannot be parsed is reported
and replaced by a fresh state rather than stopping the watchdog.

:class:`StateLock` (``fcntl.flock`` on ``<state file>.lock``) makes one watchdog the
owner of a state file: a loop holds it for its lifetime, a ``--once`` run for its
one check, so overlapping cron runs are serialised (no lost update: each reads what
the previous one wrote; no double stop) and a second loop on the same pod exits.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any

from reviewkit.atomicfile import write_json

VERSION = 1
#: A state whose last check is older than this (and older than 10 checks) belongs
#: to an earlier session of the pod: a stopped and resumed pod starts afresh.
SESSION_GAP_SECONDS = 3600.0


@dataclass
class WatchdogState:
    """Everything carried from one check to the next. Times are on ``clock``."""

    pod_id: str | None = None
    clock: str = "wall"  # "wall" (epoch seconds) or "trace" (trace offsets)
    first_start: float | None = None
    last_check: float | None = None
    last_wall_check: float | None = None
    idle_count: int = 0
    checks: int = 0
    stop_failures: int = 0
    next_attempt: float = 0.0
    trace_row: int = 0
    stopped_at: float | None = None
    # For reviewkit.watchdog.status() in a notebook: what the last check saw.
    unknown_since: dict[str, float] = field(default_factory=dict)  # wall clock, per unknown key
    signals: dict[str, list[str]] = field(default_factory=dict)  # name -> [status, detail]
    decision: str | None = None
    idle_limit: int | None = None
    check_interval: float | None = None
    min_runtime: float | None = None
    peak: str | None = None  # the peak window in force at the last check, if any
    pod_cost_per_hr: float | None = None
    pod_uptime: float | None = None
    pod_uptime_at: float | None = None  # wall clock of that uptime

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: Any) -> WatchdogState:
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError("not a watchdog state (missing or wrong 'version')")
        known = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in data.items() if k in known})
        if not isinstance(state.idle_count, int) or state.idle_count < 0:
            raise ValueError(f"bad idle_count {state.idle_count!r}")
        if not isinstance(state.unknown_since, dict) or not isinstance(state.signals, dict):
            raise ValueError("bad unknown_since or signals")
        return state


def default_state_path() -> Path:
    """``$WATCHDOG_STATE_FILE``, else ``$XDG_CACHE_HOME/reviewkit/watchdog-state.json``."""
    env = os.environ.get("WATCHDOG_STATE_FILE")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache).expanduser() / "reviewkit" / "watchdog-state.json"


def load_state(
    path: str | os.PathLike[str],
    *,
    pod_id: str | None,
    clock: str,
    now: float,
    interval: float,
    log: logging.Logger,
) -> WatchdogState:
    """The saved state if it belongs to this pod and session, else a fresh one."""
    fresh = WatchdogState(pod_id=pod_id, clock=clock, first_start=now)
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return fresh
    except OSError as exc:
        log.warning("State file %s unreadable (%s); starting with a fresh state", target, exc)
        return fresh
    try:
        state = WatchdogState.from_json(json.loads(text))
    except (ValueError, TypeError) as exc:
        log.warning("State file %s is corrupt (%s); starting with a fresh state", target, exc)
        return fresh
    if state.pod_id != pod_id or state.clock != clock:
        log.info("State file %s belongs to another pod or clock; starting afresh", target)
        return fresh
    gap = max(SESSION_GAP_SECONDS, 10 * interval)
    stale = state.last_check is not None and (now - state.last_check > gap or now < state.last_check)
    if clock == "wall" and stale:
        log.info("State file %s is from an earlier session; starting afresh", target)
        return fresh
    if state.first_start is None:
        state.first_start = now
    return state


def save_state(path: str | os.PathLike[str], state: WatchdogState) -> None:
    """Write the state atomically and durably (:func:`reviewkit.atomicfile.write_json`)."""
    write_json(path, state.to_json(), durable=True, indent=1, sort_keys=True)


class StateLock:
    """Exclusive ``flock`` on ``<state>.lock``, holding the owner's pid for messages."""

    def __init__(self, state_path: str | os.PathLike[str]) -> None:
        target = Path(state_path)
        self.path = target.with_name(target.name + ".lock")
        self._handle: IO[str] | None = None

    def acquire(self, timeout: float = 0.0) -> bool:
        """Take the lock, waiting up to ``timeout`` seconds; False if another holds it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on Linux: no locking
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open while locked
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    return False
                time.sleep(0.05)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return True

    def holder(self) -> str:
        """The pid written by the current owner ("?" if unknown)."""
        try:
            return self.path.read_text(encoding="utf-8").strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor releases the flock
            self._handle = None
