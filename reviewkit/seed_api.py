"""The seed project's ``SentimentAnalyzer`` calls, kept for code written against it.

The seed took a list of review payloads (``id``, ``restaurant_id``, ``content``, ...)
for one restaurant and returned counts and ratios. Here the same calls run on the
once-per-kernel engine and also return a label and score per review, and, when asked
(``aspects=True`` or names), what each review says about taste, service, price, portion and
wait, with the restaurant's aspect summary counted as :func:`reviewkit.summarize` counts it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from reviewkit import scoring
from reviewkit.analysis import score_texts, warn_unscored
from reviewkit.aspect_prompts import MENTION_MODES, Aspect, AspectError, resolve_aspects
from reviewkit.aspects import ScoredAspects, aspect_frame_columns, score_aspects
from reviewkit.cache import ResultCache
from reviewkit.engines.base import Engine
from reviewkit.process_engine import default_engine
from reviewkit.scoring import SCORE, SENTIMENT, ScoredTexts

#: The key of the restaurant's aspect summary that is not an aspect (so no aspect may take the name).
TOP_NEGATIVE = "top_negative_aspect"

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
            raise ValueError(
                f"reviews belong to several restaurants {sorted(map(str, ids))}: "
                "pass restaurant_id or analyze them per restaurant"
            )
        restaurant_id = payloads[0].get("restaurant_id") if payloads else None
    return restaurant_id


def _same_id(value: Any) -> Any:
    return str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else value


def restaurant_result(
    restaurant_id: Any, payloads: list[dict[str, Any]], scored: ScoredTexts, aspects: AspectAnswer | None = None
) -> dict[str, Any]:
    """The seed's response for one restaurant from the scores of its reviews, in order.

    ``aspects`` (from :func:`aspect_answers`) adds ``aspects`` to each review and the
    restaurant's ``aspect_summary``; without it the response is the seed's, key for key.
    """
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
    out["reviews"] = [
        {"id": p.get("id"), SENTIMENT: label, SCORE: None if np.isnan(score) else float(score)}
        for p, label, score in zip(payloads, sentiments, scores)
    ]
    if aspects is not None:
        per_review, summary = aspects
        for review, found in zip(out["reviews"], per_review, strict=True):
            review["aspects"] = found
        out["aspect_summary"] = summary
    return out


#: One restaurant's aspects: per review ``{name: {"label", "score"}}``, and its ``aspect_summary``.
AspectAnswer = tuple[list[dict[str, dict[str, Any]]], dict[str, Any]]


def chosen_aspects(aspects: Any) -> tuple[Aspect, ...]:
    """The aspects asked for (:func:`reviewkit.aspects.resolve_aspects`), refusing a name the
    response uses for something else; () for None/False."""
    chosen = resolve_aspects(aspects)
    if any(a.name == TOP_NEGATIVE for a in chosen):
        raise AspectError(f"aspect name {TOP_NEGATIVE!r} is the summary's own key; choose another")
    return chosen


def aspect_answers(scored: ScoredTexts, found: ScoredAspects, sizes: Sequence[int]) -> list[AspectAnswer]:
    """Per restaurant (``sizes``: how many of the consecutive reviews are each one's), each review's
    aspects and the restaurant's summary, counted by :func:`reviewkit.summarize` in one call.

    ``label`` is positive/negative/none, or null (and ``score`` too) for a review without text
    or one that could not be scored; ``score`` is P(positive) of a mentioned aspect, else null.
    ``aspect_summary[name]`` has ``mentions``, ``positive``, ``negative`` and ``positive_share``
    (null without mentions); ``top_negative_aspect`` is the aspect with the most negative
    mentions (ties: the first asked), null when none is negative.
    """
    import pandas as pd

    from reviewkit.summary import summarize

    if sum(sizes) != len(found.labels) or len(found.labels) != len(scored.probs):
        raise ValueError(
            f"{sum(sizes)} reviews in the restaurants, {len(found.labels)} with aspects, {len(scored.probs)} scored"
        )
    names = [a.name for a in found.aspects]
    group = np.repeat(np.arange(len(sizes)), sizes)
    sentiments = pd.Categorical(scored.sentiments(), categories=list(scored.labels))
    frame = pd.DataFrame(
        {"restaurant": group, SENTIMENT: sentiments, SCORE: scored.scores(), **aspect_frame_columns(found)}
    )
    summary = summarize(frame, by="restaurant") if len(frame) else None
    answers: list[AspectAnswer] = []
    start = 0
    for g, size in enumerate(sizes):
        reviews = [
            {
                name: {"label": found.labels[row][j], "score": _number(found.scores[row, j])}
                for j, name in enumerate(names)
            }
            for row in range(start, start + size)
        ]
        start += size
        counts: dict[str, Any] = {}
        row = summary.loc[g] if summary is not None and g in summary.index else None
        for name in names:
            mentions = 0 if row is None else int(row[f"{name}_mentions"])
            negative = 0 if row is None else int(row[f"{name}_negative"])
            counts[name] = {
                "mentions": mentions,
                "positive": mentions - negative,
                "negative": negative,
                "positive_share": None if row is None else _number(row[f"{name}_positive_share"]),
            }
        top = None if row is None else row[TOP_NEGATIVE]
        counts[TOP_NEGATIVE] = top if isinstance(top, str) else None
        answers.append((reviews, counts))
    return answers


def _number(value: Any) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


class SentimentAnalyzer:
    """``analyze(reviews, restaurant_id)`` and ``await analyze_async(...)``, as in the seed."""

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        labels: Sequence[str] = ("positive", "negative"),
        cache: bool | ResultCache = True,
        progress: bool = False,
    ) -> None:
        self.engine = engine
        self.labels = tuple(labels)
        self.cache = cache
        self.progress = progress

    def analyze(
        self,
        reviews: Iterable[Any],
        restaurant_id: Any = None,
        *,
        aspects: Any = None,
        mention: str = "words",
        **options: Any,
    ) -> dict[str, Any]:
        """Counts, ratios (whole percent of ``total_count``, as the seed) and per-review labels.

        ``aspects`` (None: none, the seed's response unchanged): ``True`` for taste, service,
        price, portion and wait, a list of those names or :class:`~reviewkit.Aspect` objects.
        Each review then gains ``aspects`` (``{"taste": {"label": "positive", "score": 0.91},
        "price": {"label": "none", "score": None}, ...}``) and the result ``aspect_summary``
        (see :func:`aspect_answers`). ``mention`` is :func:`reviewkit.score_aspects`'.
        Bad aspects raise :class:`~reviewkit.AspectError` before any scoring.
        """
        payloads = [_payload(r) for r in reviews]
        restaurant_id = restaurant_of(payloads, restaurant_id)
        chosen = chosen_aspects(aspects)
        if chosen and mention not in MENTION_MODES:
            raise ValueError(f"mention must be one of {MENTION_MODES}, got {mention!r}")
        texts = [p["content"] for p in payloads]
        engine = self.engine
        if chosen and engine is None and scoring.needs_engine(texts):
            engine = default_engine()  # one engine for both passes
        log.info("analyzing %d reviews with vLLM (restaurant_id: %s)", len(payloads), restaurant_id)
        scored = score_texts(
            texts, engine=engine, labels=self.labels, cache=self.cache, progress=self.progress, **options
        )
        found = None
        if chosen:
            passed = {k: v for k, v in options.items() if k in ("calibrate_scores", "chunk_size")}
            found = score_aspects(
                texts, engine, aspects=chosen, mention=mention, cache=self.cache, progress=self.progress, **passed
            )
            warn_unscored(found, "position", range(len(texts)))
        out = restaurant_result(
            restaurant_id,
            payloads,
            scored,
            None if found is None else aspect_answers(scored, found, [len(payloads)])[0],
        )
        log.info(
            "analysis done: %s",
            ", ".join(f"{label} {out[f'{label}_count']} ({out[f'{label}_ratio']}%)" for label in scored.labels),
        )
        return out

    async def analyze_async(
        self, reviews: Iterable[Any], restaurant_id: Any = None, max_retries: int = 3, **options: Any
    ) -> dict[str, Any]:
        """``analyze`` in a worker thread, so the notebook's event loop keeps running
        (``aspects=`` and ``mention=`` as there).

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
                delay = 0.5 * 2**attempt
                attempt += 1
                log.warning("analysis failed (%s); retry %d/%d in %.1f s", exc, attempt, max_retries, delay)
                await asyncio.sleep(delay)
