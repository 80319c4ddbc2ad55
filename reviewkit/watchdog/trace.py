"""Replay a recorded GPU-utilisation trace in place of NVML.

A trace is a CSV file with a header: the column ``seconds`` is the time offset of
the sample, every other column is one GPU's utilisation in percent::

    seconds,gpu0,gpu1
    0,87,91
    60,3,0

Each :meth:`TraceReader.read` returns the next row, like one NVML poll, so the
watchdog's real decision code runs unchanged on a recorded afternoon. An empty cell
stands for an unreadable GPU (that GPU unknown, as an NVML error on it would be; a
row with no value at all is a :class:`SignalError`).
When the rows run out :class:`TraceEnded` is raised and the watchdog exits.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from reviewkit.watchdog.signals import SignalError


class TraceEnded(Exception):
    """No more rows: the replay is over."""


class TraceFormatError(ValueError):
    """The file is not a valid trace; the message names the file and line."""


@dataclass(frozen=True)
class TraceRow:
    seconds: float
    values: tuple[float | None, ...]


def load_trace(path: str | os.PathLike[str]) -> tuple[list[str], list[TraceRow]]:
    """GPU column names and rows of a trace file, validated.

    Rows must have as many cells as the header and non-decreasing ``seconds``;
    utilisation must be a number from 0 to 100 or empty.
    """
    source = Path(path)
    try:
        handle = source.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise TraceFormatError(f"{source}: cannot open ({exc.strerror or exc})") from exc
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise TraceFormatError(f"{source}: empty file, expected a header")
        header = [name.strip() for name in header]
        if "seconds" not in header:
            raise TraceFormatError(f"{source}: no 'seconds' column in header {header}")
        time_col = header.index("seconds")
        gpu_cols = [i for i in range(len(header)) if i != time_col]
        if not gpu_cols:
            raise TraceFormatError(f"{source}: no GPU columns besides 'seconds'")
        rows: list[TraceRow] = []
        for line_no, cells in enumerate(reader, start=2):
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise TraceFormatError(f"{source}:{line_no}: {len(cells)} cells, header has {len(header)}")
            try:
                seconds = float(cells[time_col])
            except ValueError:
                raise TraceFormatError(f"{source}:{line_no}: seconds {cells[time_col]!r} is not a number") from None
            if rows and seconds < rows[-1].seconds:
                raise TraceFormatError(f"{source}:{line_no}: seconds go backwards")
            values: list[float | None] = []
            for i in gpu_cols:
                text = cells[i].strip()
                if not text:
                    values.append(None)
                    continue
                try:
                    value = float(text)
                except ValueError:
                    value = -1.0
                if not 0.0 <= value <= 100.0:
                    raise TraceFormatError(f"{source}:{line_no}: {header[i]} = {text!r} is not a percentage")
                values.append(value)
            rows.append(TraceRow(seconds, tuple(values)))
    if not rows:
        raise TraceFormatError(f"{source}: no data rows")
    return [header[i] for i in gpu_cols], rows


class TraceReader:
    """A :class:`~reviewkit.watchdog.gpu.UtilizationReader` over a trace file.

    ``position`` is the index of the next row; it can be saved and passed back as
    ``start`` so cron-style runs (one check per process) walk the trace too.
    """

    description = "trace"

    def __init__(self, path: str | os.PathLike[str], start: int = 0) -> None:
        self.path = Path(path)
        self.columns, self.rows = load_trace(path)
        self.position = max(0, int(start))
        self.errors: dict[str, str] = {}

    @property
    def start_time(self) -> float:
        return self.rows[0].seconds

    @property
    def end_time(self) -> float:
        return self.rows[-1].seconds

    def next_time(self) -> float:
        """Time offset of the row the next :meth:`read` returns."""
        if self.position >= len(self.rows):
            raise TraceEnded(f"{self.path}: {len(self.rows)} rows replayed")
        return self.rows[self.position].seconds

    def read(self) -> list[float | None]:
        if self.position >= len(self.rows):
            raise TraceEnded(f"{self.path}: {len(self.rows)} rows replayed")
        row = self.rows[self.position]
        self.position += 1
        missing = [self.columns[i] for i, v in enumerate(row.values) if v is None]
        self.errors = {
            f"gpu{i}": f"t={row.seconds:g}s: no value for {self.columns[i]}"
            for i, v in enumerate(row.values)
            if v is None
        }
        if len(missing) == len(row.values):
            raise SignalError(f"t={row.seconds:g}s: no value for {', '.join(missing)}")
        return list(row.values)
