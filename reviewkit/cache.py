"""A persistent result cache, so re-running a notebook cell is nearly free.

Keyed by everything that changes an answer (model, prompt version, labels, scoring
recipe) plus the review text; the value is the label probabilities. SQLite because
it is in the standard library, safe across processes (WAL) and fast for batched lookups.

The cache is an optimisation, so it never breaks an analysis: a file that is not a
database is moved aside and a fresh one started; a folder or file that cannot be
written turns the cache off; a read or write that fails mid-run is a miss or a skipped
store. Each is reported once per process as a ``CacheWarning``. Its size is bounded
(``REVIEWKIT_CACHE_MAX_MB``) by evicting the least recently used entries.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from reviewkit import cache_db
from reviewkit.cache_db import CacheWarning, entry_size, fix_hint, report

__all__ = [
    "ResultCache",
    "CacheInfo",
    "CacheWarning",
    "cache_info",
    "default_cache",
    "default_cache_path",
    "namespace",
    "DEFAULT_MAX_MB",
]

_BATCH = 500  # SQLite's default limit on '?' parameters is 999
DEFAULT_MAX_MB = 1024.0
_EVICT_TO = 0.9  # evict down to 90 % of the bound, so eviction is not on every write


def default_cache_path() -> Path:
    """``REVIEWKIT_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/reviewkit``."""
    folder = os.environ.get("REVIEWKIT_CACHE_DIR")
    if not folder:
        folder = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reviewkit")
    return Path(folder).expanduser() / "results.sqlite3"


def default_max_mb() -> float:
    """``REVIEWKIT_CACHE_MAX_MB`` if set and valid (else a warning), else 1024."""
    raw = os.environ.get("REVIEWKIT_CACHE_MAX_MB", "").strip()
    if not raw:
        return DEFAULT_MAX_MB
    try:
        value = float(raw)
        if value > 0 and math.isfinite(value):
            return value
    except ValueError:
        pass
    report(
        Path("REVIEWKIT_CACHE_MAX_MB"),
        "setting",
        f"REVIEWKIT_CACHE_MAX_MB={raw!r} is not a positive number of megabytes; using {DEFAULT_MAX_MB:g}",
    )
    return DEFAULT_MAX_MB


def namespace(*parts: str) -> str:
    """A short digest naming one model + prompt + labels + scoring combination."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]


@dataclass
class CacheInfo:
    """What ``reviewkit.cache_info()`` and ``reviewkit cache info`` show."""

    path: Path
    enabled: bool
    disabled_reason: str | None
    exists: bool = True
    entries: int = 0
    entry_bytes: int = 0  # estimated size of the entries; what the bound counts
    disk_bytes: int = 0  # the database file and its WAL/shared-memory files
    max_bytes: int = 0
    models: dict[str, tuple[int, int]] = field(default_factory=dict)  # model -> (entries, bytes)
    moved_aside: list[Path] = field(default_factory=list)  # corrupt files kept next to it

    def as_dict(self) -> dict:
        return {
            "path": str(self.path),
            "exists": self.exists,
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "entries": self.entries,
            "entry_bytes": self.entry_bytes,
            "disk_bytes": self.disk_bytes,
            "max_bytes": self.max_bytes,
            "models": {m: {"entries": n, "bytes": b} for m, (n, b) in self.models.items()},
            "moved_aside": [str(p) for p in self.moved_aside],
        }

    def __str__(self) -> str:
        state = "on" if self.enabled else f"off: {self.disabled_reason}"
        if not self.exists:
            state = "not created yet"
        lines = [
            f"reviewkit result cache: {self.path} ({state})",
            (
                f"  {_entries(self.entries)}, {_mb(self.entry_bytes)} of {_mb(self.max_bytes)} allowed "
                f"(REVIEWKIT_CACHE_MAX_MB), {_mb(self.disk_bytes)} on disk"
            ),
        ]
        for model, (n, size) in sorted(self.models.items()):
            lines.append(f"  {model or '(model not recorded)'}: {_entries(n)}, {_mb(size)}")
        if self.moved_aside:
            size = sum(p.stat().st_size for p in self.moved_aside if p.exists())
            lines.append(
                f"  {len(self.moved_aside)} unreadable file(s) moved aside, {_mb(size)} "
                "(`reviewkit cache clear` deletes them)"
            )
        return "\n".join(lines)

    __repr__ = __str__  # a notebook cell ending in cache_info() shows the readable form


class ResultCache:
    """Label probabilities by (namespace, text); never raises for I/O trouble.

    ``enabled`` is False when the cache could not be opened (``disabled_reason`` says
    why); ``write_error`` holds the last failed store of a working cache. ``status``
    is the one-line form for run figures.
    """

    touch_after_s = 3600.0  # a hit refreshes last_used at most hourly: a re-run costs no write

    def __init__(self, path: str | Path | None = None, *, max_mb: float | None = None) -> None:
        if max_mb is not None and not (isinstance(max_mb, (int, float)) and max_mb > 0 and math.isfinite(max_mb)):
            raise ValueError(f"max_mb must be a positive number of megabytes, got {max_mb!r}")
        self.path = Path(path).expanduser() if path is not None else default_cache_path()
        self.max_bytes = int((max_mb if max_mb is not None else default_max_mb()) * 1e6)
        self.enabled = True
        self.disabled_reason: str | None = None
        self.write_error: str | None = None
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._stale: sqlite3.Connection | None = None  # a parent's, after fork: never used
        self._pid = os.getpid()
        self._open()

    # -- opening --------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return self._disable(f"cannot create the folder {self.path.parent} ({cache_db.describe(exc)})")
        for attempt in (1, 2):
            opened = cache_db.inode(self.path)
            try:
                self._conn = cache_db.connect(self.path)
                return None
            except cache_db.NewerSchema as exc:
                return self._disable(f"{exc}; upgrade reviewkit or point REVIEWKIT_CACHE_DIR elsewhere")
            except sqlite3.DatabaseError as exc:
                if attempt == 1 and cache_db.is_corrupt(exc) and self._move_aside(exc, opened):
                    continue
                return self._disable(f"cannot open it ({cache_db.describe(exc)})")
            except OSError as exc:
                return self._disable(f"cannot open it ({cache_db.describe(exc)})")
        return None

    def _move_aside(self, exc: BaseException, opened: int | None) -> bool:
        """Keep an unreadable file (renamed with a timestamp) and start afresh."""
        failure = cache_db.move_aside(self.path, exc, opened)
        if failure is not None:
            self._disable(failure)
        return failure is None

    def _disable(self, reason: str) -> None:
        self.enabled = False
        self.disabled_reason = reason
        self._conn = None
        report(self.path, "off", f"the cache is off: {reason}. The analysis continues without it. " + fix_hint())

    def _connection(self) -> sqlite3.Connection:
        """This process's connection: a child after fork() must not reuse its parent's."""
        if self._pid != os.getpid():
            self._stale, self._conn = self._conn, cache_db.connect(self.path)
            self._pid = os.getpid()
        assert self._conn is not None
        return self._conn

    # -- reading and writing --------------------------------------------------------------

    @staticmethod
    def key(space: str, text: str) -> str:
        return hashlib.sha256(f"{space}\x00{text}".encode()).hexdigest()

    @property
    def status(self) -> str:
        """'on', 'on (writes failing: ...)' or 'off: <reason>' for run figures."""
        if not self.enabled:
            return f"off: {self.disabled_reason}"
        return f"on (writes failing: {self.write_error})" if self.write_error else "on"

    def get_many(self, space: str, texts: Sequence[str]) -> dict[str, list[float]]:
        """The cached probabilities of those texts that have them; a failed read is a miss."""
        if not self.enabled or not texts:
            return {}
        keys = {self.key(space, t): t for t in texts}
        items = list(keys)
        found: dict[str, list[float]] = {}
        stale: list[str] = []
        now = time.time()
        try:
            with self._lock:
                conn = self._connection()
                for start in range(0, len(items), _BATCH):
                    batch = items[start : start + _BATCH]
                    sql = f"SELECT key, probs, last_used FROM results WHERE key IN ({','.join('?' * len(batch))})"
                    for key, probs, used in cache_db.retry(lambda q=sql, b=batch: conn.execute(q, b).fetchall(), conn):
                        try:
                            found[keys[key]] = [float(p) for p in json.loads(probs)]
                        except (ValueError, TypeError):
                            continue  # an unreadable value is a miss
                        if used < now - self.touch_after_s:
                            stale.append(key)
                if stale:
                    self._touch(conn, stale, now)
        except (sqlite3.Error, OSError) as exc:
            report(
                self.path,
                "read",
                f"a read failed ({cache_db.describe(exc)}); those reviews are "
                "recomputed. " + fix_hint("run `reviewkit cache clear` or delete the file"),
            )
        return found

    def _touch(self, conn: sqlite3.Connection, keys: list[str], now: float) -> None:
        """Mark hits as recently used (one batched write; failing it only costs LRU accuracy)."""

        def write() -> None:
            conn.execute("BEGIN IMMEDIATE")
            for start in range(0, len(keys), _BATCH):
                batch = keys[start : start + _BATCH]
                conn.execute(
                    f"UPDATE results SET last_used = ? WHERE key IN ({','.join('?' * len(batch))})", [now, *batch]
                )
            conn.execute("COMMIT")

        try:
            cache_db.retry(write, conn)
        except sqlite3.Error as exc:
            cache_db.rollback(conn)
            cache_db.log.debug("result cache: could not refresh last_used: %s", exc)

    def put_many(self, space: str, results: Iterable[tuple[str, Sequence[float]]], *, model: str = "") -> None:
        """Store results; a failed write (disk full, read-only) is reported once and skipped."""
        now = time.time()
        rows = []
        for text, probs in results:
            key, value = self.key(space, text), json.dumps([float(p) for p in probs])
            rows.append((key, value, model, entry_size(key, value, model), now))
        if not self.enabled or not rows:
            return

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO results (key, probs, model, size, last_used) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET probs = excluded.probs, model = excluded.model, "
                "size = excluded.size, last_used = excluded.last_used",
                rows,
            )
            conn.execute("COMMIT")

        try:
            with self._lock:
                conn = self._connection()
                cache_db.retry(lambda: write(conn), conn)
                cache_db.evict_lru(conn, self.max_bytes, int(self.max_bytes * _EVICT_TO))
        except (sqlite3.Error, OSError) as exc:
            if self._conn is not None:
                cache_db.rollback(self._conn)
            self.write_error = cache_db.describe(exc)
            report(
                self.path,
                "write",
                f"storing results failed ({self.write_error}); this run's "
                "results are returned but not cached. "
                + fix_hint("free disk space, lower REVIEWKIT_CACHE_MAX_MB or run `reviewkit cache clear`"),
            )

    # -- seeing and clearing --------------------------------------------------------------

    def __len__(self) -> int:
        if not self.enabled:
            return 0
        try:
            with self._lock:
                return cache_db.usage(self._connection())[0]
        except sqlite3.Error:
            return 0

    def info(self) -> CacheInfo:
        """Path, entries, sizes and per-model counts (``reviewkit.cache_info()``)."""
        result = CacheInfo(
            self.path,
            self.enabled,
            self.disabled_reason,
            max_bytes=self.max_bytes,
            disk_bytes=cache_db.disk_bytes(self.path),
            moved_aside=cache_db.moved_aside_files(self.path),
        )
        if self.enabled:
            try:
                with self._lock:
                    conn = self._connection()
                    result.entries, result.entry_bytes = cache_db.usage(conn)
                    result.models = cache_db.usage_by_model(conn)
            except sqlite3.Error as exc:
                result.enabled = False
                result.disabled_reason = f"cannot read it ({cache_db.describe(exc)}); `reviewkit cache clear`"
        return result

    def clear(self, model: str | None = None) -> int:
        """Delete all entries (or one model's); return how many. All also removes moved-aside files.

        A damaged file is deleted and started afresh; another failure sets ``write_error``.
        """
        if not self.enabled:
            return 0
        count = 0
        with self._lock:
            conn = self._connection()

            def delete() -> int:
                conn.execute("BEGIN IMMEDIATE")
                if model is None:
                    count = conn.execute("DELETE FROM results").rowcount
                else:
                    count = conn.execute("DELETE FROM results WHERE model = ?", (model,)).rowcount
                conn.execute("COMMIT")
                return count

            try:
                count = cache_db.retry(delete, conn)
                cache_db.retry(lambda: conn.execute("PRAGMA incremental_vacuum").fetchall(), conn)
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # shrinks the WAL file
            except sqlite3.Error as exc:
                cache_db.rollback(conn)
                if not (model is None and cache_db.is_corrupt(exc)):
                    self.write_error = cache_db.describe(exc)
                    return count
                conn.close()
                for suffix in ("", "-wal", "-shm"):
                    self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
                self._open()
        if model is None:
            for moved in cache_db.moved_aside_files(self.path):
                moved.unlink(missing_ok=True)
        return count

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None
        if self.enabled:
            self.enabled, self.disabled_reason = False, "closed"


_default: ResultCache | None = None
_default_lock = threading.Lock()


def default_cache() -> ResultCache:
    """The process-wide cache at the default path; re-opened if the path changes or it is off."""
    global _default
    with _default_lock:
        if _default is None or _default.path != default_cache_path() or not _default.enabled:
            _default = ResultCache()  # never raises; an unusable location gives a disabled cache
        else:
            _default.max_bytes = int(default_max_mb() * 1e6)
        return _default


def cache_info(path: str | Path | None = None) -> CacheInfo:
    """Where the result cache is, how many entries (per model) and how big it is.

    Does not create a cache that does not exist yet.
    """
    target = Path(path).expanduser() if path is not None else default_cache_path()
    if not target.exists():
        return CacheInfo(
            target,
            True,
            None,
            exists=False,
            max_bytes=int(default_max_mb() * 1e6),
            moved_aside=cache_db.moved_aside_files(target),
        )
    cache = ResultCache(target)
    try:
        return cache.info()
    finally:
        cache.close()


def _entries(n: int) -> str:
    return f"{n:,} entry" if n == 1 else f"{n:,} entries"


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 100_000 else f"{n / 1e3:,.1f} kB"
