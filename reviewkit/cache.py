"""A persistent result cache, so re-running a notebook cell is nearly free.

Keyed by everything that changes an answer (model, prompt version, labels, scoring
recipe) plus the review text; the value is the label probabilities. SQLite because
it is in the standard library, safe across processes and fast for batched lookups.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterable, Sequence

_BATCH = 500  # SQLite's default limit on '?' parameters is 999


def default_cache_path() -> Path:
    """``REVIEWKIT_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/reviewkit``."""
    folder = os.environ.get("REVIEWKIT_CACHE_DIR")
    if not folder:
        folder = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reviewkit")
    return Path(folder).expanduser() / "results.sqlite3"


def namespace(*parts: str) -> str:
    """A short digest naming one model + prompt + labels + scoring combination."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]


class ResultCache:
    """Label probabilities by (namespace, text)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        with self._lock, self._conn:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, probs TEXT NOT NULL)")

    @staticmethod
    def key(space: str, text: str) -> str:
        return hashlib.sha256(f"{space}\x00{text}".encode()).hexdigest()

    def get_many(self, space: str, texts: Sequence[str]) -> dict[str, list[float]]:
        """The cached probabilities of those texts that have them."""
        keys = {self.key(space, t): t for t in texts}
        found: dict[str, list[float]] = {}
        items = list(keys)
        with self._lock:
            for start in range(0, len(items), _BATCH):
                batch = items[start:start + _BATCH]
                marks = ",".join("?" * len(batch))
                for key, probs in self._conn.execute(
                        f"SELECT key, probs FROM results WHERE key IN ({marks})", batch):
                    found[keys[key]] = json.loads(probs)
        return found

    def put_many(self, space: str, results: Iterable[tuple[str, Sequence[float]]]) -> None:
        rows = [(self.key(space, t), json.dumps([float(p) for p in probs])) for t, probs in results]
        with self._lock, self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO results VALUES (?, ?)", rows)

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def clear(self) -> None:
        with self._lock, self._conn:
            self._conn.execute("DELETE FROM results")

    def close(self) -> None:
        self._conn.close()


_default: ResultCache | None = None


def default_cache() -> ResultCache:
    """The process-wide cache at the default path (re-opened if the path changes)."""
    global _default
    if _default is None or _default.path != default_cache_path():
        _default = ResultCache()
    return _default
