"""Atomic JSON files: a reader sees the old content or the new, never half of either.

One writer for reviewkit's activity file (:mod:`reviewkit.activity`, rewritten by
a heartbeat while the watchdog reads it) and the watchdog's state file
(:mod:`reviewkit.watchdog.state`, where a watchdog killed mid-write must leave the
previous state). Standard library only: the watchdog imports it where reviewkit's
heavy dependencies are not installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["write_json"]


def write_json(
    path: str | os.PathLike[str],
    data: Any,
    *,
    durable: bool = False,
    indent: int | None = None,
    sort_keys: bool = False,
) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file in its folder and a rename.

    The folder is created if needed; on any error the temporary file is removed and
    the old file is left as it was. ``durable`` also flushes the data to the disk
    before the rename (``fsync``), so a power cut cannot leave an empty file behind:
    worth it for state that must outlive the machine, not for a 10 s heartbeat.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}-", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=indent, sort_keys=sort_keys)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
