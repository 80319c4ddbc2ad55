"""What the result cache holds, in a form for people: ``reviewkit.cache_info()``, ``reviewkit cache info``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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


def cache_info(path: str | Path | None = None) -> CacheInfo:
    """Where the result cache is, how many entries (per model) and how big it is.

    Does not create a cache that does not exist yet.
    """
    from reviewkit.cache import ResultCache, default_cache_path, default_max_mb

    target = Path(path).expanduser() if path is not None else default_cache_path()
    if not target.exists():
        return CacheInfo(
            target,
            True,
            None,
            exists=False,
            max_bytes=int(default_max_mb() * 1e6),
            moved_aside=sorted(target.parent.glob(target.name + ".corrupt-*")) if target.parent.is_dir() else [],
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


def disk_bytes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += path.with_name(path.name + suffix).stat().st_size
        except OSError:
            pass
    return total


def cmd_cache(args: argparse.Namespace) -> int:
    """See or clear the result cache; stdlib only, so it never loads vllm or an engine."""
    import json

    from reviewkit.cache import ResultCache

    if args.action == "info":
        info = cache_info()
        if args.model is not None:
            info.models = {m: v for m, v in info.models.items() if m == args.model}
        print(json.dumps(info.as_dict(), indent=2) if args.json else info)
        return 0
    cache = ResultCache()
    if not cache.enabled:
        print(f"reviewkit: cannot clear the result cache {cache.path}: {cache.disabled_reason}",
              file=sys.stderr)
        return 1
    count = cache.clear(model=args.model)
    if cache.write_error:
        print(f"reviewkit: clearing {cache.path} failed: {cache.write_error}", file=sys.stderr)
        return 1
    which = f" of model {args.model!r}" if args.model is not None else ""
    print(f"deleted {count:,} entries{which} from {cache.path}")
    cache.close()
    return 0


def add_parser(sub: Any) -> None:
    """``reviewkit cache info|clear``."""
    cache = sub.add_parser("cache", help="see or clear the on-disk result cache (REVIEWKIT_CACHE_DIR)")
    cache.add_argument("action", choices=["info", "clear"],
                       help="info: path, entries, size, per model; clear: delete entries")
    cache.add_argument("--model", default=None,
                       help="only this model's entries (its id as `cache info` lists it)")
    cache.add_argument("--json", action="store_true", help="info as JSON")
    cache.set_defaults(func=cmd_cache)
