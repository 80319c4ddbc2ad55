"""``analyze``: a DataFrame of reviews in, the same rows with sentiment columns out.

A thin DataFrame layer over :func:`reviewkit.scoring.score_texts`, which does the
scoring (one forward pass per distinct review, calibrated, cached): this module only
checks the input and puts the results back as columns, keeping the index and order.
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from reviewkit.cache import ResultCache
from reviewkit.engines.base import Engine
from reviewkit.prompts import DEFAULT_LABELS, PromptTemplate
from reviewkit.scoring import DEFAULT_CHUNK_SIZE, score_texts

SENTIMENT = "sentiment"
SCORE = "sentiment_score"


def analyze(
    df: pd.DataFrame,
    text: str = "content",
    *,
    labels: Sequence[str] = DEFAULT_LABELS,
    prompt: PromptTemplate | None = None,
    engine: Engine | None = None,
    cache: bool | ResultCache = True,
    calibrate_scores: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
) -> pd.DataFrame:
    """Return a copy of ``df`` with ``sentiment`` and ``sentiment_score`` columns.

    ``sentiment`` is a Categorical of ``labels`` (add ``"neutral"`` for three classes);
    ``sentiment_score`` is the calibrated probability of ``"positive"`` (of the first
    label if there is no ``"positive"``). Rows whose text is NaN, None, empty or blank
    get NaN in both, without a model call. Non-string values are analyzed as ``str``.
    Existing ``sentiment``/``sentiment_score`` columns are replaced. The result has
    ``df``'s index and row order, duplicate index values included.

    ``prompt`` replaces the built-in Korean/English few-shot prompts by one template;
    ``cache=False`` bypasses the on-disk result cache (or pass a ``ResultCache``);
    ``engine`` defaults to the loaded engine (in-process or remote), loading the
    default one if none is. Figures of the run: ``reviewkit.last_run()``.
    """
    _check_input(df, text)
    scored = score_texts(df[text].tolist(), engine=engine, labels=labels, prompt=prompt, cache=cache,
                         calibrate_scores=calibrate_scores, chunk_size=chunk_size, progress=progress)
    out = df.copy()
    out[SENTIMENT] = pd.Categorical(scored.sentiments(), categories=list(scored.labels))
    out[SCORE] = scored.scores()
    return out


def _check_input(df: Any, text: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"analyze() needs a pandas DataFrame, got {type(df).__name__}")
    if text not in df.columns:
        raise KeyError(f"column {text!r} not found; the DataFrame's columns are {list(df.columns)}")
    if isinstance(df[text], pd.DataFrame):
        raise ValueError(f"the DataFrame has several columns named {text!r}")
