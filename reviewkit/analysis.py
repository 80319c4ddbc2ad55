"""The public analysis calls: ``analyze`` (a DataFrame) and ``score_texts`` (a list).

Both are thin layers over :func:`reviewkit.scoring.score_texts`, which does the scoring
(one forward pass per distinct review, calibrated, cached) on the engine it is given.
This layer picks that engine: the one passed, else the process's (loaded on first use,
and only when some text needs it), checks the input, and for a DataFrame puts the
results back as columns, keeping the index and order.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import pandas as pd

from reviewkit import scoring
from reviewkit.aspect_prompts import Aspect, AspectError, aspect_columns, resolve_aspects
from reviewkit.aspects import ScoredAspects, aspect_frame_columns, score_aspects
from reviewkit.cache import ResultCache
from reviewkit.engines.base import Engine
from reviewkit.process_engine import default_engine
from reviewkit.prompts import DEFAULT_LABELS, PromptTemplate
from reviewkit.scoring import DEFAULT_CHUNK_SIZE, SCORE, SENTIMENT, ScoredTexts


def analyze(
    df: pd.DataFrame,
    text: str = "content",
    *,
    labels: Sequence[str] = DEFAULT_LABELS,
    prompt: PromptTemplate | dict[str, PromptTemplate] | None = None,
    engine: Engine | None = None,
    cache: bool | ResultCache = True,
    calibrate_scores: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
    aspects: Any = None,
    mention: str = "words",
) -> pd.DataFrame:
    """Return a copy of ``df`` with ``sentiment`` and ``sentiment_score`` columns.

    Args:
        df: the reviews; it is not modified.
        text: the column holding the review text.
        labels: the label set; add ``"neutral"`` for three classes.
        prompt: one :class:`~reviewkit.PromptTemplate` for every review instead of the built-in
            Korean/English few-shot prompts, or a dict of one per language (``{"ko": ..., "en": ...}``).
        engine: the engine to score with; None means the process's engine (``reviewkit.load()``
            with no arguments if none is loaded yet, in-process or remote).
        cache: ``True`` for the on-disk result cache, ``False`` to bypass it, or a
            :class:`~reviewkit.ResultCache`.
        calibrate_scores: divide out the prompt's content-free lean towards a label.
        chunk_size: reviews per engine call; an interrupt keeps the finished chunks in the cache.
        progress: show a progress bar (a widget in notebooks).
        aspects: None (default) for none; ``True`` for taste, service, price, portion and wait
            (맛, 서비스, 가격, 양, 웨이팅); a list of those names; or custom
            :class:`~reviewkit.Aspect` objects (a name, and a description in Korean and English).
            Adds ``aspect_<name>``, a Categorical of ``positive``/``negative``/``none`` (not
            mentioned), NaN without text, and ``aspect_<name>_score``, the calibrated probability
            that a mentioned aspect is positive (NaN where it is not mentioned). The overall
            columns are the same with or without aspects.
        mention: how an aspect counts as mentioned: ``"words"`` (its words in the review, then
            the model asked positive or negative: the default, the embedded model's best) or
            ``"model"`` (the model asked positive / negative / none: for a pod's larger model).

    Wide columns, one pair per aspect, keep one row per review in ``df``'s index and order, as
    the overall columns do; ``reviewkit.summarize`` reads them per restaurant.

    ``sentiment`` is a Categorical of ``labels``; ``sentiment_score`` is the calibrated
    probability of ``"positive"`` (of the first label if there is no ``"positive"``). Rows
    whose text is NaN, None, empty or blank get NaN in both, without a model call.
    Non-string values are analyzed as ``str``. A row that cannot be scored (text that is not
    valid Unicode, or that an engine call fails on alone) gets NaN too, the other rows are
    scored, and one warning names the index of each such row and why. Existing
    ``sentiment``/``sentiment_score`` columns are replaced. The result has ``df``'s index and row order, duplicate index
    values included. Figures of the run: ``reviewkit.last_run()``.
    """
    check_frame(df, text)
    chosen = check_aspects(aspects, labels, text)
    scored = _score(
        df[text].tolist(),
        engine=engine,
        labels=labels,
        prompt=prompt,
        cache=cache,
        calibrate_scores=calibrate_scores,
        chunk_size=chunk_size,
        progress=progress,
    )
    warn_unscored(scored, "index", df.index.tolist())
    out = df.copy()
    out[SENTIMENT] = pd.Categorical(scored.sentiments(), categories=list(scored.labels))
    out[SCORE] = scored.scores()
    if chosen:
        found = _score_aspects(
            df[text].tolist(),
            engine=engine,
            aspects=chosen,
            mention=mention,
            cache=cache,
            calibrate_scores=calibrate_scores,
            chunk_size=chunk_size,
            progress=progress,
        )
        warn_unscored(found, "index", df.index.tolist())
        for column, values in aspect_frame_columns(found).items():
            out[column] = values
        scored.stats.aspect_pass = found.stats
    return out


def score_texts(
    texts: Sequence[Any],
    *,
    engine: Engine | None = None,
    labels: Sequence[str] = DEFAULT_LABELS,
    prompt: PromptTemplate | dict[str, PromptTemplate] | None = None,
    cache: bool | ResultCache = True,
    calibrate_scores: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
) -> ScoredTexts:
    """Label probabilities of a plain list of texts, in input order (``reviewkit.score_texts``).

    The arguments are :func:`analyze`'s; ``engine=None`` means the process's engine, loaded
    only if some text needs it. A text that cannot be scored gets NaN (its reason in
    ``errors``) and one warning names its position. See :func:`reviewkit.scoring.score_texts`.
    """
    scored = _score(
        texts,
        engine=engine,
        labels=labels,
        prompt=prompt,
        cache=cache,
        calibrate_scores=calibrate_scores,
        chunk_size=chunk_size,
        progress=progress,
    )
    warn_unscored(scored, "position", range(len(scored.probs)))
    return scored


def check_aspects(aspects: Any, labels: Sequence[str], text: str) -> tuple[Aspect, ...]:
    """The aspects asked for, refused before any scoring when one cannot be asked."""
    chosen = resolve_aspects(aspects, labels=[str(label).strip() for label in labels])
    taken = [column for a in chosen for column in aspect_columns(a) if column in (text, SENTIMENT, SCORE)]
    if taken:
        raise AspectError(
            f"aspect column {taken[0]!r} would overwrite the column {taken[0]!r} that analyze "
            "reads or writes; rename the aspect"
        )
    return chosen


def _score_aspects(texts: Sequence[Any], *, engine: Engine | None, **options: Any) -> ScoredAspects:
    if engine is None and scoring.needs_engine(texts):
        engine = default_engine()
    return score_aspects(texts, engine, **options)


def _score(texts: Sequence[Any], *, engine: Engine | None, **options: Any) -> ScoredTexts:
    if engine is None and scoring.needs_engine(texts):
        engine = default_engine()
    return scoring.score_texts(texts, engine, isolate_rows=True, **options)


def warn_unscored(scored: ScoredTexts | ScoredAspects, where: str, names: Sequence[Any], shown: int = 10) -> None:
    """One warning for all the rows that could not be scored: which (up to ``shown``) and why."""
    if not scored.errors:
        return
    rows = sorted(scored.errors)
    listed = ", ".join(repr(names[i]) for i in rows[:shown]) + (", ..." if len(rows) > shown else "")
    reasons = list(dict.fromkeys(scored.errors[i] for i in rows))
    warnings.warn(
        f"{len(rows)} review(s) could not be scored and got NaN ({where} {listed}): "
        + "; ".join(reasons[:3])
        + ("; ..." if len(reasons) > 3 else ""),
        stacklevel=3,
    )


def check_frame(df: Any, text: str) -> None:
    """Refuse what ``analyze`` cannot read: not a DataFrame, a missing or repeated text column."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"analyze() needs a pandas DataFrame, got {type(df).__name__}")
    if text not in df.columns:
        raise KeyError(f"column {text!r} not found; the DataFrame's columns are {list(df.columns)}")
    if isinstance(df[text], pd.DataFrame):
        raise ValueError(f"the DataFrame has several columns named {text!r}")
