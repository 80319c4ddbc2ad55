"""The seed project's ``SentimentAnalyzer`` calls, kept for code written against it.

The seed took a list of review payloads (``id``, ``restaurant_id``, ``content``, ...)
for one restaurant and returned counts and ratios. Here the same calls run on the
once-per-kernel engine and also return a label and score per review.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from reviewkit.analysis import score_texts
from reviewkit.engines.base import Engine
from reviewkit.scoring import SCORE, SENTIMENT, ScoredTexts

log = logging.getLogger("reviewkit")

# Errors that say the input is wrong: retrying cannot help.
_NOT_RETRIED = (TypeError, KeyError, ValueError, ImportError)


def _payload(review: Any) -> dict[str, Any]:
    if isinstance(review, Mapping):
        return dict(review)
    if hasattr(review, "model_dump"):  # pydantic models, as the seed's API used
        return dict(review.model_dump())
    if hasattr(review, "__dict__"):
        return dict(vars(review))
    raise TypeError(f"a review must be a dict with a 'content' field, got {type(review).__name__}")


def restaurant_of(payloads: list[dict[str, Any]], restaurant_id: Any = None) -> Any:
    """The restaurant the reviews belong to; checks every review has a ``content``."""
    if any("content" not in p for p in payloads):
        raise KeyError("every review needs a 'content' field")
    if restaurant_id is None:
        # 1 and "1" are the same restaurant (JSON clients write ids either way); the first review's id is kept.
        ids = {_same_id(p.get("restaurant_id")) for p in payloads}
        if len(ids) > 1:
            raise ValueError(f"reviews belong to several restaurants {sorted(map(str, ids))}: "
                             "pass restaurant_id or analyze them per restaurant")
        restaurant_id = payloads[0].get("restaurant_id") if payloads else None
    return restaurant_id


def _same_id(value: Any) -> Any:
    return str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else value


def restaurant_result(restaurant_id: Any, payloads: list[dict[str, Any]], scored: ScoredTexts) -> dict[str, Any]:
    """The seed's response for one restaurant from the scores of its reviews, in order."""
    labels = scored.labels
    sentiments = scored.sentiments()
    scores = scored.scores()
    total = len(payloads)
    counts = {label: sentiments.count(label) for label in labels}
    out: dict[str, Any] = {"restaurant_id": restaurant_id}
    for label in labels:
        out[f"{label}_count"] = counts[label]
    out["total_count"] = total
    for label in labels:
        out[f"{label}_ratio"] = int(round(100 * counts[label] / total)) if total else 0
    out["unlabelled_count"] = total - sum(counts.values())
    out["reviews"] = [{"id": p.get("id"), SENTIMENT: label, SCORE: None if np.isnan(score) else float(score)}
                      for p, label, score in zip(payloads, sentiments, scores)]
    return out


class SentimentAnalyzer:
    """``analyze(reviews, restaurant_id)`` and ``await analyze_async(...)``, as in the seed."""

    def __init__(self, engine: Engine | None = None, *, labels: Sequence[str] = ("positive", "negative"),
                 cache: bool = True, progress: bool = False) -> None:
        self.engine = engine
        self.labels = tuple(labels)
        self.cache = cache
        self.progress = progress

    def analyze(self, reviews: Iterable[Any], restaurant_id: Any = None, **options: Any) -> dict[str, Any]:
        """Counts, ratios (whole percent of ``total_count``, as the seed) and per-review labels."""
        payloads = [_payload(r) for r in reviews]
        restaurant_id = restaurant_of(payloads, restaurant_id)
        log.info("analyzing %d reviews with vLLM (restaurant_id: %s)", len(payloads), restaurant_id)
        scored = score_texts([p["content"] for p in payloads], engine=self.engine, labels=self.labels,
                             cache=self.cache, progress=self.progress, **options)
        out = restaurant_result(restaurant_id, payloads, scored)
        log.info("analysis done: %s", ", ".join(
            f"{label} {out[f'{label}_count']} ({out[f'{label}_ratio']}%)" for label in scored.labels))
        return out

    async def analyze_async(self, reviews: Iterable[Any], restaurant_id: Any = None,
                            max_retries: int = 3, **options: Any) -> dict[str, Any]:
        """``analyze`` in a worker thread, so the notebook's event loop keeps running.

        Engine failures are retried up to ``max_retries`` times with exponential
        backoff (0.5 s, 1 s, 2 s, ...); bad input is not retried.
        """
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a non-negative integer, got {max_retries!r}")
        reviews = list(reviews)
        attempt = 0
        while True:
            try:
                return await asyncio.to_thread(self.analyze, reviews, restaurant_id, **options)
            except _NOT_RETRIED:
                raise
            except Exception as exc:
                if attempt >= max_retries:
                    raise
                delay = 0.5 * 2 ** attempt
                attempt += 1
                log.warning("analysis failed (%s); retry %d/%d in %.1f s", exc, attempt, max_retries, delay)
                await asyncio.sleep(delay)
