"""``analyze``: a DataFrame of reviews in, the same rows with sentiment columns out.

One forward pass per distinct review: the shared few-shot prefix is served by vLLM's
prefix cache, the label tokens' log-probabilities are read and renormalised, and
nothing is generated. Rows keep their index and order; texts are deduplicated and
answered from the on-disk result cache where possible; chunks finished before an
interrupt stay in that cache, so re-running the cell continues where it stopped.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd

from reviewkit import activity, runstats
from reviewkit.cache import ResultCache, default_cache, namespace
from reviewkit.engine import Engine, current_engine, load
from reviewkit.prompts import DEFAULT_LABELS, BuiltPrompt, PromptTemplate, default_templates, language_of
from reviewkit.scoring import (SCORING_VERSION, calibrate, content_free_bias, label_probabilities,
                               tokenize_reviews)

log = logging.getLogger("reviewkit")

SENTIMENT = "sentiment"
SCORE = "sentiment_score"
DEFAULT_CHUNK_SIZE = 1024


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
    Existing ``sentiment``/``sentiment_score`` columns are replaced.

    ``prompt`` replaces the built-in Korean/English few-shot prompts by one template;
    ``cache=False`` bypasses the on-disk result cache (or pass a ``ResultCache``);
    ``engine`` defaults to the loaded engine, loading the default one if none is.
    Figures of the run: ``reviewkit.last_run()``.
    """
    started = time.perf_counter()
    _check_input(df, text, chunk_size)
    templates = _templates(labels, prompt)
    labels = next(iter(templates.values())).labels
    texts = _clean_texts(df[text])
    stats = runstats.RunStats(rows=len(df), empty_rows=sum(t is None for t in texts))
    unique = list(dict.fromkeys(t for t in texts if t is not None))
    stats.unique_texts = len(unique)
    probs_by_text: dict[str, list[float]] = {}

    if unique:
        engine = engine or current_engine() or load()
        stats.model = engine.model_id
        built = {route: tmpl.build(engine.tokenizer, engine.prefix_block_size) for route, tmpl in templates.items()}
        space = namespace(engine.model_id, SCORING_VERSION, str(calibrate_scores),
                          *(f"{r}={b.version}" for r, b in sorted(built.items())))
        store = _result_cache(cache)
        if store is not None:
            probs_by_text.update(store.get_many(space, unique, model=engine.model_id))
        stats.cached = len(probs_by_text)
        todo = [t for t in unique if t not in probs_by_text]
        if todo:
            with activity.working("analyze"):
                _score(engine, built, todo, probs_by_text, stats, store, space,
                       calibrate_scores, chunk_size, progress)

    out = _with_columns(df, texts, probs_by_text, labels)
    counts = out[SENTIMENT].value_counts(sort=False)
    stats.label_counts = {str(label): int(counts.get(label, 0)) for label in labels}
    stats.seconds = time.perf_counter() - started
    runstats.record(stats)
    return out


def _check_input(df: Any, text: str, chunk_size: int) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"analyze() needs a pandas DataFrame, got {type(df).__name__}")
    if text not in df.columns:
        raise KeyError(f"column {text!r} not found; the DataFrame's columns are {list(df.columns)}")
    if isinstance(df[text], pd.DataFrame):
        raise ValueError(f"the DataFrame has several columns named {text!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")


def _templates(labels: Sequence[str], prompt: PromptTemplate | None) -> dict[str, PromptTemplate]:
    if isinstance(labels, str):
        raise TypeError(f"labels must be a sequence of label names, got the string {labels!r}")
    if prompt is not None:
        if not isinstance(prompt, PromptTemplate):
            raise TypeError(f"prompt must be a reviewkit.PromptTemplate, got {type(prompt).__name__}")
        return {"all": prompt}
    return default_templates(tuple(labels))


def _clean_texts(column: pd.Series) -> list[str | None]:
    """Texts as ``str``; None where there is nothing to analyze."""
    cleaned: list[str | None] = []
    for value in column.tolist():
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA \
                or value is pd.NaT:
            cleaned.append(None)
            continue
        value = value if isinstance(value, str) else str(value)
        cleaned.append(value if value.strip() else None)
    return cleaned


def _result_cache(cache: bool | ResultCache) -> ResultCache | None:
    if isinstance(cache, ResultCache):
        return cache
    return default_cache() if cache else None


def _route(built: dict[str, BuiltPrompt], text: str) -> str:
    return "all" if "all" in built else language_of(text)


def _score(engine: Engine, built: dict[str, BuiltPrompt], todo: list[str],
           probs_by_text: dict[str, list[float]], stats: runstats.RunStats,
           store: ResultCache | None, space: str, calibrate_scores: bool,
           chunk_size: int, progress: bool) -> None:
    """Score ``todo`` chunk by chunk, storing each finished chunk at once."""
    from tqdm.auto import tqdm

    biases = {route: content_free_bias(engine, b) if calibrate_scores else None
              for route, b in built.items()}
    budget = {route: engine.max_model_len - b.overhead_tokens - 1 for route, b in built.items()}
    label_token_ids = next(iter(built.values())).label_token_ids
    assert all(b.label_token_ids == label_token_ids for b in built.values())
    bar = tqdm(total=len(todo), unit="review", desc="reviewkit", disable=not progress)
    engine_started = time.perf_counter()
    try:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            routes = [_route(built, t) for t in chunk]
            prompts = []
            for route, ids in zip(routes, tokenize_reviews(engine, chunk)):
                if len(ids) > budget[route]:
                    ids = ids[:budget[route]]
                    stats.truncated += 1
                prompts.append(built[route].prompt_ids(ids))
            # One engine call per chunk: both routes' prompts batch together, each
            # group still sharing its own cached prefix (the label tokens are the same).
            scored = engine.score_labels(prompts, label_token_ids)
            probs = label_probabilities(np.array([s.label_logprobs for s in scored]))
            route_array = np.array(routes)
            for route in dict.fromkeys(routes):
                rows = route_array == route
                probs[rows] = calibrate(probs[rows], biases[route])
            stats.prompt_tokens += sum(s.prompt_tokens for s in scored)
            stats.cached_prompt_tokens += sum(s.cached_tokens for s in scored)
            finished = list(zip(chunk, probs.tolist()))
            probs_by_text.update(finished)
            if store is not None:
                store.put_many(space, finished, model=engine.model_id)
            stats.computed += len(chunk)
            bar.update(len(chunk))
    except KeyboardInterrupt:
        stats.interrupted = True
        log.warning("interrupted after %d of %d reviews; finished chunks are %s", stats.computed,
                    len(todo), "cached: re-run to continue" if store is not None else "lost (cache=False)")
        raise
    finally:
        bar.close()
        stats.engine_seconds = time.perf_counter() - engine_started
    if stats.truncated:
        warnings.warn(f"{stats.truncated} review(s) were longer than the model length "
                      f"({engine.max_model_len} tokens with the prompt) and were truncated",
                      stacklevel=3)


def _with_columns(df: pd.DataFrame, texts: list[str | None],
                  probs_by_text: dict[str, list[float]], labels: tuple[str, ...]) -> pd.DataFrame:
    score_index = labels.index("positive") if "positive" in labels else 0
    codes = np.full(len(texts), -1, dtype=np.int64)
    scores = np.full(len(texts), np.nan)
    for row, value in enumerate(texts):
        if value is None:
            continue
        probs = probs_by_text[value]
        codes[row] = int(np.argmax(probs))
        scores[row] = probs[score_index]
    out = df.copy()
    out[SENTIMENT] = pd.Categorical.from_codes(codes, categories=list(labels))
    out[SCORE] = scores
    return out
