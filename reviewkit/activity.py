"""reviewkit's own activity file, read by the idle watchdog.

GPU utilisation alone misses the quiet parts of an analysis (tokenising, waiting on
the engine's queue, writing results), and a pod stopped in the middle loses the run.
So while reviewkit analyzes it keeps a tiny JSON file up to date::

    {"state": "busy", "pid": 4242, "host": "pod-1", "label": "analyze",
     "since": 1700000000.0, "updated": 1700000010.0}

and writes ``{"state": "idle", "updated": ...}`` when the work ends. A daemon thread
refreshes ``updated`` every :data:`REFRESH_SECONDS` so a long analysis keeps looking
busy; the watchdog treats a busy record whose heartbeat is older than
:data:`STALE_AFTER_SECONDS` (or whose process is gone) as a crash, not as work.

The path is ``$REVIEWKIT_ACTIVITY_FILE``, default
``$XDG_CACHE_HOME/reviewkit/activity.json`` (``~/.cache/reviewkit/activity.json``).

Only the standard library is imported: the watchdog runs where reviewkit's heavy
dependencies are not installed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from reviewkit.atomicfile import write_json

__all__ = [
    "ENV_VAR",
    "REFRESH_SECONDS",
    "STALE_AFTER_SECONDS",
    "activity_path",
    "read_activity",
    "working",
]

ENV_VAR = "REVIEWKIT_ACTIVITY_FILE"
#: How often the heartbeat thread rewrites ``updated`` while work is in progress.
REFRESH_SECONDS = 10.0
#: A busy record whose heartbeat is older than this is a crashed run, not work.
STALE_AFTER_SECONDS = 3 * REFRESH_SECONDS

_log = logging.getLogger(__name__)


def activity_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The activity file: ``path`` if given, else the env variable, else the default."""
    if path:
        return Path(path).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache).expanduser() / "reviewkit" / "activity.json"


def read_activity(path: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The current record, or None when no file exists (reviewkit never ran here).

    Raises ``ValueError`` for a file that is not a JSON object: the watchdog must be
    able to tell "nothing ran" from "cannot tell".
    """
    target = activity_path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{target}: not JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise ValueError(f"{target}: not a JSON object")
    return record


class _Tracker:
    """Process-wide counter of open ``working()`` blocks plus the heartbeat thread.

    A counter rather than a flag because blocks nest (``analyze`` calling a helper
    that also marks itself busy) and threads may analyze concurrently; the file says
    idle only when the last block exits.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._since = 0.0
        self._label = ""
        self._path: Path | None = None
        self._stop: threading.Event | None = None
        self._warned: set[Path] = set()  # paths already warned about

    def _record(self, state: str) -> dict[str, Any]:
        now = time.time()
        if state == "idle":
            return {"state": "idle", "updated": now}
        return {
            "state": "busy",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "label": self._label,
            "since": self._since,
            "updated": now,
        }

    def _write(self, state: str) -> None:
        # Losing the activity file must never break an analysis: warn once per path
        # (not at every heartbeat), carry on.
        assert self._path is not None
        try:
            write_json(self._path, self._record(state))
        except OSError as exc:
            if self._path not in self._warned:
                self._warned.add(self._path)
                _log.warning("reviewkit activity file %s not writable: %s", self._path, exc)

    def enter(self, label: str) -> None:
        with self._lock:
            self._depth += 1
            if self._depth > 1:
                return
            self._path = activity_path()
            self._since = time.time()
            self._label = label
            self._write("busy")
            self._stop = threading.Event()
            thread = threading.Thread(
                target=self._heartbeat, args=(self._stop,), name="reviewkit-activity", daemon=True
            )
            thread.start()

    def exit(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth > 0:
                return
            if self._stop is not None:
                self._stop.set()
                self._stop = None
            self._write("idle")

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(REFRESH_SECONDS):
            with self._lock:
                if stop.is_set():
                    return
                self._write("busy")


_TRACKER = _Tracker()


@contextlib.contextmanager
def working(label: str = "analyze") -> Iterator[None]:
    """Mark reviewkit as busy for the duration of the block (also usable as a decorator).

    >>> with working("analyze"):
    ...     pass
    """
    _TRACKER.enter(label)
    try:
        yield
    finally:
        _TRACKER.exit()
