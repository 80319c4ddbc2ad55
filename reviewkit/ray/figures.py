"""A run's figures: the small Ray actor the scoring actors report to, and what a run returns.

Kept out of the scoring actor so a report never slows a batch: actors send their counts
fire-and-forget, and the driver reads them once at the end of the run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RayRun:
    """Figures of one ``reviewkit.ray.analyze`` call that ran (``last_run()``)."""

    rows: int = 0  # rows in the input
    skipped: int = 0  # rows whose id was already in ``output`` (resumed)
    scored: int = 0  # rows finished by this run
    no_text: int = 0  # rows with NaN/empty text (NaN, error "no text")
    errors: int = 0  # rows that failed alone (NaN and their error)
    seconds: float = 0.0  # wall time of the call, engine loads included
    actors: int = 0  # actors that started
    restarts: int = 0  # actor restarts (a crashed actor or a dead engine)
    per_actor: dict[str, dict[str, Any]] = field(default_factory=dict)
    output: str | None = None
    parts: int = 0  # part files this run wrote
    interrupted: bool = False

    @property
    def reviews_per_s(self) -> float:
        """Rows finished per second of the whole call."""
        return self.scored / self.seconds if self.seconds > 0 else math.nan

    def actor_reviews_per_s(self) -> dict[str, float]:
        """Per actor: rows per second of its busy time (batches, not its engine load)."""
        return {
            key: a["rows"] / a["busy_seconds"] if a["busy_seconds"] else math.nan for key, a in self.per_actor.items()
        }

    def busy_span(self) -> float:
        """Seconds from the first batch's start to the last batch's end, over all actors:
        the run without the engines' loads (a scaling measure when loads are staggered)."""
        starts = [a["first_batch_at"] for a in self.per_actor.values() if a.get("first_batch_at")]
        ends = [a["last_batch_at"] for a in self.per_actor.values() if a.get("last_batch_at")]
        return max(ends) - min(starts) if starts and ends else math.nan

    def __str__(self) -> str:
        per_actor = ", ".join(f"{v:.1f}" for v in self.actor_reviews_per_s().values()) or "n/a"
        text = (
            f"{self.scored} of {self.rows} rows in {self.seconds:.1f} s ({self.reviews_per_s:.1f} reviews/s; "
            f"per actor {per_actor}), {self.actors} actor(s), {self.restarts} restart(s), "
            f"{self.skipped} already written, {self.no_text} without text, {self.errors} error(s)"
        )
        if self.output:
            text += f"; {self.parts} part file(s) written to {self.output}"
        return text + (" [interrupted]" if self.interrupted else "")


class RunFigures:
    """Counts of one run, reported by the actors (a Ray actor with no CPU of its own)."""

    def __init__(self) -> None:
        self.actors: dict[str, dict[str, Any]] = {}

    def _actor(self, key: str) -> dict[str, Any]:
        return self.actors.setdefault(
            key,
            {
                "starts": 0,
                "rows": 0,
                "batches": 0,
                "busy_seconds": 0.0,
                "load_seconds": [],
                "pids": [],
                "node": None,
                "module": None,
                "first_batch_at": None,
                "last_batch_at": None,
            },
        )

    def started(self, key: str, pid: int, node: str, load_seconds: float, module: str) -> None:
        actor = self._actor(key)
        actor["starts"] += 1
        actor["pids"].append(pid)
        actor["load_seconds"].append(load_seconds)
        actor["node"], actor["module"] = node, module

    def finished_batch(self, key: str, rows: int, seconds: float) -> None:
        actor = self._actor(key)
        actor["rows"] += rows
        actor["batches"] += 1
        actor["busy_seconds"] += seconds
        now = time.time()  # wall clock: comparable across the nodes of a cluster
        actor["first_batch_at"] = min(actor["first_batch_at"] or now - seconds, now - seconds)
        actor["last_batch_at"] = now

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return self.actors
