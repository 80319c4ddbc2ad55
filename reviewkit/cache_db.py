"""SQLite plumbing of the result cache: schema, migration, retries, error reports.

Kept apart from ``cache.py`` so the cache's behaviour (what is a hit, what is
evicted, what happens on failure) reads without the SQL and the error taxonomy.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, TypeVar

log = logging.getLogger("reviewkit")

SCHEMA_VERSION = 2  # 0/1: results(key, probs) without accounting; 2: model, size, last_used, usage
ROW_OVERHEAD = 32  # bytes per entry beyond its text columns (rowid, record header, index cells)
BUSY_TIMEOUT_S = 10.0  # SQLite's own wait for a lock, per statement
RETRY_FOR_S = 60.0  # then our retries, before a write is given up (and reported)

_T = TypeVar("_T")

_TABLES = (
    """CREATE TABLE IF NOT EXISTS results (
        key TEXT PRIMARY KEY, probs TEXT NOT NULL, model TEXT NOT NULL DEFAULT '',
        size INTEGER NOT NULL DEFAULT 0, last_used REAL NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS results_last_used ON results (last_used)",
    # Running totals kept by triggers, so the size bound costs one row read per write.
    """CREATE TABLE IF NOT EXISTS usage (
        id INTEGER PRIMARY KEY CHECK (id = 0), entries INTEGER NOT NULL, bytes INTEGER NOT NULL)""",
    "INSERT OR IGNORE INTO usage SELECT 0, COUNT(*), COALESCE(SUM(size), 0) FROM results",
    """CREATE TRIGGER IF NOT EXISTS results_added AFTER INSERT ON results BEGIN
        UPDATE usage SET entries = entries + 1, bytes = bytes + NEW.size WHERE id = 0; END""",
    """CREATE TRIGGER IF NOT EXISTS results_removed AFTER DELETE ON results BEGIN
        UPDATE usage SET entries = entries - 1, bytes = bytes - OLD.size WHERE id = 0; END""",
    """CREATE TRIGGER IF NOT EXISTS results_resized AFTER UPDATE OF size ON results BEGIN
        UPDATE usage SET bytes = bytes + NEW.size - OLD.size WHERE id = 0; END""",
)


class CacheWarning(UserWarning):
    """The result cache is off or failed to read/write; the analysis went on without it.

    Silence with ``warnings.filterwarnings("ignore", category=reviewkit.cache.CacheWarning)``.
    """


class NewerSchema(Exception):
    """The file was written by a newer reviewkit; it is left alone."""


def entry_size(key: str, probs: str, model: str) -> int:
    """Estimated bytes on disk of one entry: the key is stored twice (table + index)."""
    return 2 * len(key) + len(probs) + len(model.encode()) + ROW_OVERHEAD


def is_busy(exc: BaseException) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc)


def is_corrupt(exc: BaseException) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    return name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "not a database" in text or "malformed" in text


def describe(exc: BaseException) -> str:
    """'disk full' rather than a bare errno or SQLite code, where we know the meaning."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = f"{type(exc).__name__}: {exc}"
    if name == "SQLITE_FULL" or "disk is full" in str(exc):
        return f"the disk or the database is full ({text})"
    if name.startswith("SQLITE_READONLY") or "readonly" in str(exc):
        return f"the file or its folder is read-only ({text})"
    if name.startswith("SQLITE_IOERR"):
        return f"writing to the disk failed; is it full? ({text}, {name})"
    return text


def retry(fn: Callable[[], _T], conn: sqlite3.Connection) -> _T:
    """Run ``fn``, retrying while another process holds the lock (never surfaced)."""
    deadline = time.monotonic() + RETRY_FOR_S
    delay = 0.005
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() > deadline:
                raise
            rollback(conn)
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


def rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def connect(path: Path) -> sqlite3.Connection:
    """Open ``path``, create or migrate the schema, and prove the file is writable."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    try:
        retry(lambda: _setup(conn), conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _setup(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]  # reads the header: NOTADB here
    if version > SCHEMA_VERSION:
        raise NewerSchema(f"it was written by a newer reviewkit (schema {version}, this one reads {SCHEMA_VERSION})")
    if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # lets `clear` shrink the file
    conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer, across processes
    conn.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; a crash loses at most the last commit
    conn.execute("BEGIN IMMEDIATE")
    try:
        if version < SCHEMA_VERSION:
            _migrate(conn)
        # A real write, every open: a read-only file or folder fails here, not mid-run.
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("UPDATE usage SET entries = entries WHERE id = 0")
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise


def _migrate(conn: sqlite3.Connection) -> None:
    """Schema 0/1 -> 2 in place: old entries keep their keys, so they stay valid hits."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
    if columns:
        for name, decl in (
            ("model", "TEXT NOT NULL DEFAULT ''"),
            ("size", "INTEGER NOT NULL DEFAULT 0"),
            ("last_used", "REAL NOT NULL DEFAULT 0"),
        ):
            if name not in columns:
                conn.execute(f"ALTER TABLE results ADD COLUMN {name} {decl}")
        conn.execute(
            f"UPDATE results SET size = 2 * length(key) + length(probs) + length(model) "
            f"+ {ROW_OVERHEAD}, last_used = ? WHERE size = 0",
            (time.time(),),
        )
    for statement in _TABLES:
        conn.execute(statement)


_reported: set[tuple[str, str]] = set()
_reported_lock = threading.Lock()

_FIX = "make that folder writable or set REVIEWKIT_CACHE_DIR to a writable folder"


def report(path: Path, kind: str, message: str) -> None:
    """Warn once per process, path and kind of trouble ('off', 'moved', 'read', 'write')."""
    with _reported_lock:
        if (str(path), kind) in _reported:
            log.debug("reviewkit result cache %s: %s", path, message)
            return
        _reported.add((str(path), kind))
    warnings.warn(f"reviewkit result cache {path}: {message}", CacheWarning, stacklevel=4)


def fix_hint(fix: str = _FIX) -> str:
    """How to fix or silence a report, the same words everywhere."""
    return f"To fix it, {fix}; to silence it, pass cache=False or filter reviewkit.cache.CacheWarning."


def inode(path: Path) -> int | None:
    """The file's inode, to tell whether another process replaced it meanwhile."""
    try:
        return path.stat().st_ino
    except OSError:
        return None


def move_aside(path: Path, exc: BaseException, opened: int | None) -> str | None:
    """Rename an unreadable cache file (and its -wal/-shm) with a timestamp, so a fresh cache
    can start and nothing is lost; None when done (or another process did it), else why not."""
    if inode(path) != opened:
        return None  # another process replaced it already: open the new one
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}-{os.getpid()}")
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None  # another process moved it first
    except OSError as move_exc:
        return f"it is not a readable SQLite database ({exc}) and cannot be moved aside ({move_exc}); delete it"
    for suffix in ("-wal", "-shm", "-journal"):  # they belong to the unreadable file
        side = path.with_name(path.name + suffix)
        try:
            os.replace(side, target.with_name(target.name + suffix))
        except OSError:
            pass
    report(
        path,
        "moved",
        f"it was not a readable SQLite database ({exc}); moved it aside to {target.name} and "
        "started a fresh cache. Delete that file (or run `reviewkit cache clear`) when you no longer need it.",
    )
    return None


def usage(conn: sqlite3.Connection) -> tuple[int, int]:
    """(entries, estimated bytes) from the totals the triggers keep."""
    row = retry(lambda: conn.execute("SELECT entries, bytes FROM usage").fetchone(), conn)
    return (int(row[0]), int(row[1])) if row else (0, 0)


def evict_lru(conn: sqlite3.Connection, max_bytes: int, target_bytes: int) -> None:
    """Past ``max_bytes``, delete least recently used entries until they fit ``target_bytes``
    (below the bound, so that eviction is not on every write)."""
    entries, size = usage(conn)
    if size <= max_bytes:
        return
    for _ in range(20):  # the estimate below converges in one or two rounds
        if size <= target_bytes or entries <= 0:
            break
        n = max(1, math.ceil(entries * (size - target_bytes) / size))

        def delete(n: int = n) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM results WHERE key IN (SELECT key FROM results ORDER BY last_used LIMIT ?)", (n,))
            conn.execute("COMMIT")

        retry(delete, conn)
        entries, size = usage(conn)


def usage_by_model(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """model -> (entries, estimated bytes)."""
    rows = retry(lambda: conn.execute("SELECT model, COUNT(*), SUM(size) FROM results GROUP BY model").fetchall(), conn)
    return {m: (int(n), int(b or 0)) for m, n, b in rows}


def disk_bytes(path: Path) -> int:
    """Bytes on disk of the database and its write-ahead log and shared-memory files."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += path.with_name(path.name + suffix).stat().st_size
        except OSError:
            pass
    return total


def moved_aside_files(path: Path) -> list[Path]:
    """Unreadable cache files :func:`move_aside` kept next to ``path``."""
    try:
        return sorted(path.parent.glob(path.name + ".corrupt-*"))
    except OSError:
        return []
