"""Run figures of each analysis: what was done, how fast, and what the cache saved."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger("reviewkit")


@dataclass
class RunStats:
    """Figures of one ``analyze`` call (``reviewkit.last_run()`` returns the latest)."""

    rows: int = 0
    empty_rows: int = 0  # NaN / None / blank text: NaN outputs, no model call
    unique_texts: int = 0  # distinct non-empty texts
    cached: int = 0  # distinct texts answered by the result cache
    computed: int = 0  # distinct texts sent to the engine
    truncated: int = 0  # texts cut to fit the model length
    seconds: float = 0.0  # wall time of the whole call
    engine_seconds: float = 0.0  # time inside the engine
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # prompt tokens served by vLLM's prefix cache
    label_counts: dict[str, int] = field(default_factory=dict)
    model: str = ""
    interrupted: bool = False
    cache: str = ""  # the result cache: "on", "off: <why>", "on (writes failing: <why>)"
    # A remote engine's HTTP figures for this call (zero in-process): requests sent,
    # retries among them, and seconds spent waiting (backoff, RunPod queue polling).
    remote_requests: int = 0
    remote_retries: int = 0
    remote_wait_seconds: float = 0.0
    # ``analyze(aspects=...)``: the aspect questions' own figures (``rows`` are reviews,
    # ``computed``/``cached`` are questions, ``label_counts`` are mentions per aspect).
    aspect_pass: RunStats | None = None

    @property
    def reviews_per_s(self) -> float:
        """Rows analyzed per second of the whole call (cache hits included)."""
        return self.rows / self.seconds if self.seconds > 0 else float("nan")

    @property
    def engine_reviews_per_s(self) -> float:
        return self.computed / self.engine_seconds if self.engine_seconds > 0 else float("nan")

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else float("nan")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            reviews_per_s=self.reviews_per_s,
            engine_reviews_per_s=self.engine_reviews_per_s,
            prefix_cache_hit_rate=self.prefix_cache_hit_rate,
        )
        return data

    def counts_line(self) -> str:
        """The seed's summary line: 'analyzed 100 reviews: positive 60 (60%), ...'."""
        labelled = sum(self.label_counts.values())
        parts = [
            f"{label} {n} ({round(100 * n / labelled) if labelled else 0}%)" for label, n in self.label_counts.items()
        ]
        line = f"analyzed {self.rows} reviews: " + ", ".join(parts)
        if self.empty_rows:
            line += f", no text {self.empty_rows}"
        return line

    def __str__(self) -> str:
        hits = "n/a" if self.prompt_tokens == 0 else f"{self.prefix_cache_hit_rate:.0%}"
        line = (
            f"{self.counts_line()} | {self.seconds:.2f} s, {self.reviews_per_s:.1f} reviews/s, "
            f"{self.cached} cached, {self.computed} computed, {self.prompt_tokens} prompt tokens, "
            f"prefix-cache hits {hits}"
        )
        if self.cache and self.cache != "on":
            line += f", result cache {self.cache}"
        if self.remote_requests:
            line += (
                f", {self.remote_requests} requests, {self.remote_retries} retries, "
                f"{self.remote_wait_seconds:.1f} s waiting"
            )
        if self.aspect_pass is not None:
            a = self.aspect_pass
            hits = "n/a" if a.prompt_tokens == 0 else f"{a.prefix_cache_hit_rate:.0%}"
            line += (
                f" | aspects: {a.computed} questions computed, {a.cached} cached, {a.seconds:.2f} s, "
                f"prefix-cache hits {hits}"
            )
        return line

    def add_engine_figures(self, figures: Any, before: tuple[int, int, float]) -> None:
        """Copy what an engine's figures (:class:`~reviewkit.engines.base.EngineFigures`) grew by
        since ``before`` (``figures_mark``) into this run."""
        self.remote_requests += figures.requests - before[0]
        self.remote_retries += figures.retries - before[1]
        self.remote_wait_seconds += figures.wait_seconds - before[2]


def figures_mark(figures: Any) -> tuple[int, int, float]:
    """An engine's request counters now, to subtract after a run."""
    return figures.requests, figures.retries, figures.wait_seconds


_last: RunStats | None = None


def record(stats: RunStats) -> None:
    global _last
    _last = stats
    log.info("%s", stats.counts_line())
    log.info("run figures: %s", stats)


def last_run() -> RunStats | None:
    """Figures of the latest ``analyze`` call in this process."""
    return _last
