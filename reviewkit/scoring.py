"""``score_texts``: the one way a list of review texts becomes label probabilities.

``analyze`` (DataFrames), ``reviewkit.score_texts`` (lists), the seed's ``SentimentAnalyzer``,
``reviewkit serve``, the Ray actor, the benchmarks and the notebooks all call it, each with
its engine (like LOTUS's operators, the function takes its model; the public layer picks
the process's engine). Per distinct text: pick the
language's few-shot prompt, truncate to the model length, put the review between the
shared prefix and the answer tag (as token ids, so the prefix is token-identical and
served by the prefix cache), read the label tokens' log-probabilities in one forward
pass, renormalise over the labels and divide out the prompt's content-free lean
(contextual calibration, Zhao et al. 2021, "Calibrate Before Use"), which makes the
argmax the decision and the score a usable probability. Results go to and come from
the on-disk result cache.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from reviewkit import activity, runstats
from reviewkit.cache import ResultCache, default_cache, namespace
from reviewkit.engines.base import Engine
from reviewkit.isolation import Isolated, score_apart
from reviewkit.prompts import (
    DEFAULT_LABELS,
    LANGUAGE_EXAMPLES,
    BuiltPrompt,
    PromptTemplate,
    default_templates,
    language_of,
)

LANGUAGES = tuple(LANGUAGE_EXAMPLES)

log = logging.getLogger("reviewkit")

#: The names of a review's two results: columns of ``analyze`` and ``reviewkit.ray``, keys of
#: ``reviewkit serve``'s answers.
SENTIMENT = "sentiment"
SCORE = "sentiment_score"
CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]", "...")
# Bump when the scoring recipe changes: it is part of the result-cache key.
SCORING_VERSION = "cc1"
DEFAULT_CHUNK_SIZE = 1024


@dataclass
class ScoredTexts:
    """Label probabilities per input text, in input order.

    ``probs`` has one row per input text and one column per label; rows of texts that
    were NaN, None, empty or blank are NaN (no model call was made for them), and so are
    the rows in ``errors`` (position -> why it could not be scored; only with ``isolate_rows``).
    """

    labels: tuple[str, ...]
    probs: np.ndarray
    stats: runstats.RunStats
    errors: dict[int, str] = field(default_factory=dict)

    @property
    def score_label(self) -> str:
        """The label whose probability is the score: ``positive``, else the first label."""
        return "positive" if "positive" in self.labels else self.labels[0]

    def sentiments(self) -> list[str | None]:
        """The argmax label per text; None where there was no text."""
        return [None if np.isnan(row[0]) else self.labels[int(np.argmax(row))] for row in self.probs]

    def scores(self) -> np.ndarray:
        """The calibrated probability of :attr:`score_label` per text (NaN without text)."""
        return self.probs[:, self.labels.index(self.score_label)] if len(self.probs) else np.zeros(0)


def clean_text(value: Any) -> str | None:
    """The text to analyze: ``str(value)``, or None for NaN, None, NA, empty or blank."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    value = value if isinstance(value, str) else str(value)
    return value if value.strip() else None


class UnscorableText(ValueError):
    """A text that cannot be scored whatever the engine: it is not valid Unicode."""

    def __init__(self, problem: str, position: int) -> None:
        super().__init__(problem)
        self.position = position


def unicode_problem(text: str) -> str | None:
    """Why ``text`` is not valid Unicode (a lone surrogate, e.g. JSON's ``"\\ud800"``), or None.

    Such a text cannot be encoded as UTF-8, so neither the result cache's key nor a
    tokenizer can take it; what the writer meant is unknowable, so it is never guessed.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"not valid Unicode: a lone surrogate {text[exc.start]!r} at character {exc.start} (send the text as UTF-8)"
        )
    return None


def score_texts(
    texts: Sequence[Any],
    engine: Engine | None,
    *,
    labels: Sequence[str] = DEFAULT_LABELS,
    prompt: PromptTemplate | dict[str, PromptTemplate] | None = None,
    cache: bool | ResultCache = True,
    calibrate_scores: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
    isolate_rows: bool = False,
    record: bool = True,
) -> ScoredTexts:
    """Score ``texts`` (any values; see :func:`clean_text`) and return them in input order.

    Args:
        engine: the engine to score with (None only when no text needs the model: see
            :func:`needs_engine`; ``reviewkit.score_texts`` and ``analyze`` pass the process's).
        labels: the label set (``("positive", "negative", "neutral")`` for three classes).
        prompt: one template for every text instead of the built-in per-language ones,
            or a dict with one template per language (``{"ko": ..., "en": ...}``).
        cache: ``True`` for the default on-disk result cache, ``False`` for none, or a
            :class:`~reviewkit.cache.ResultCache`.
        calibrate_scores: divide out the prompt's content-free label bias.
        chunk_size: texts per engine call; finished chunks are cached at once, so an
            interrupt loses at most the chunk in flight.
        progress: show a tqdm bar (a widget in notebooks).
        isolate_rows: a text that cannot be scored (not valid Unicode, or an engine call that
            fails on it alone: :func:`score_apart`) gets NaN and its reason in
            ``ScoredTexts.errors``, and the others are scored; False raises instead
            (:class:`UnscorableText` for invalid Unicode), for callers that isolate
            failures themselves. A dead engine raises either way.
        record: make this run ``reviewkit.last_run()`` (False for a pass inside another run,
            such as the aspect pass of ``analyze``).

    Duplicate texts are scored once. The run's figures are recorded for
    ``reviewkit.last_run()`` and logged in the seed's style.
    """
    started = time.perf_counter()
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    templates = _templates(labels, prompt)
    labels = next(iter(templates.values())).labels
    cleaned = [clean_text(t) for t in texts]
    stats = runstats.RunStats(rows=len(cleaned), empty_rows=sum(t is None for t in cleaned))
    unique = list(dict.fromkeys(t for t in cleaned if t is not None))
    stats.unique_texts = len(unique)
    probs_by_text: dict[str, list[float]] = {}
    problems = {t: why for t in unique if (why := unicode_problem(t)) is not None}
    if problems:
        if not isolate_rows:
            row = next(i for i, t in enumerate(cleaned) if t in problems)
            raise UnscorableText(problems[cleaned[row]], row)
        unique = [t for t in unique if t not in problems]

    if unique:
        if engine is None:
            raise ValueError(f"{len(unique)} distinct text(s) need an engine to score them, and none was given")
        stats.model = engine.model_id
        built = build_templates(engine, templates)
        space = namespace(
            engine.cache_identity,
            SCORING_VERSION,
            str(calibrate_scores),
            *(f"{r}={b.version}" for r, b in sorted(built.items())),
        )
        store = _result_cache(cache)
        stats.cache = store.status if store is not None else "off (cache=False)"
        if store is not None:
            probs_by_text.update(store.get_many(space, unique))
        stats.cached = len(probs_by_text)
        todo = [t for t in unique if t not in probs_by_text]
        if todo:
            mark = runstats.figures_mark(engine.figures)
            with activity.working("analyze"):
                problems.update(
                    _score_chunks(
                        engine,
                        built,
                        todo,
                        probs_by_text,
                        stats,
                        store,
                        space,
                        calibrate_scores,
                        chunk_size,
                        progress,
                        isolate_rows,
                    )
                )
            stats.add_engine_figures(engine.figures, mark)

    probs = np.full((len(cleaned), len(labels)), np.nan)
    errors = {}
    for row, value in enumerate(cleaned):
        if value in problems:
            errors[row] = problems[value]
        elif value is not None:
            probs[row] = probs_by_text[value]
    result = ScoredTexts(labels=labels, probs=probs, stats=stats, errors=errors)
    found = result.sentiments()
    stats.label_counts = {label: found.count(label) for label in labels}
    stats.seconds = time.perf_counter() - started
    if record:
        runstats.record(stats)
    return result


def needs_engine(texts: Sequence[Any]) -> bool:
    """Whether any of ``texts`` has text to score (else no engine is needed, none is loaded)."""
    return any(clean_text(t) is not None for t in texts)


def warm_up(engine: Engine) -> None:
    """The first analysis's one-off work, done at load: build the default prompts and
    measure their content-free bias (the first engine batches)."""
    for built in build_templates(engine).values():
        content_free_bias(engine, built)


def label_probabilities(logprobs: np.ndarray) -> np.ndarray:
    """Softmax over the label axis of an (n, labels) array of log-probabilities."""
    logprobs = np.asarray(logprobs, dtype=float)
    shifted = np.exp(logprobs - logprobs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def calibrate(probs: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Divide out the prompt's content-free label bias and renormalise."""
    if bias is None:
        return probs
    adjusted = probs / bias[np.newaxis, :]
    return adjusted / adjusted.sum(axis=1, keepdims=True)


def tokenize_reviews(engine: Engine, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each review as it follows ``Review:`` in the prompt (leading space)."""
    if not texts:
        return []
    return list(engine.tokenizer([" " + t for t in texts], add_special_tokens=False)["input_ids"])


def content_free_bias(engine: Engine, built: BuiltPrompt, inputs: Sequence[str] = CONTENT_FREE_INPUTS) -> np.ndarray:
    """The prompt's label probabilities on content-free inputs (computed once per engine)."""
    memo = engine.memo.setdefault("content_free_bias", {})
    key = (built.version, tuple(inputs))
    if key not in memo:
        ids = tokenize_reviews(engine, list(inputs))
        scored = engine.score_labels([built.prompt_ids(x) for x in ids], built.label_token_ids)
        probs = label_probabilities(built.label_logprobs([s.label_logprobs for s in scored]))
        memo[key] = probs.mean(axis=0)
    return memo[key]


def build_templates(engine: Engine, templates: dict[str, PromptTemplate] | None = None) -> dict[str, BuiltPrompt]:
    """Each route's prompt as token ids for ``engine`` (default: the per-language prompts)."""
    templates = templates if templates is not None else default_templates()
    return {route: t.build(engine.tokenizer, engine.prefix_block_size) for route, t in templates.items()}


def _templates(
    labels: Sequence[str],
    prompt: PromptTemplate | dict[str, PromptTemplate] | None,
) -> dict[str, PromptTemplate]:
    if isinstance(labels, str):
        raise TypeError(f"labels must be a sequence of label names, got the string {labels!r}")
    if prompt is None:
        return default_templates(tuple(labels))
    if isinstance(prompt, PromptTemplate):
        return {"all": prompt}
    if (
        isinstance(prompt, dict)
        and set(prompt) == set(LANGUAGES)
        and all(isinstance(t, PromptTemplate) for t in prompt.values())
    ):
        if len({t.labels for t in prompt.values()}) != 1:
            raise ValueError("the per-language prompts must have the same labels")
        return dict(prompt)
    raise TypeError(
        "prompt must be a reviewkit.PromptTemplate or a dict of one per language "
        f"{sorted(LANGUAGES)}, got {type(prompt).__name__}"
    )


def _result_cache(cache: bool | ResultCache) -> ResultCache | None:
    if isinstance(cache, ResultCache):
        return cache
    return default_cache() if cache else None


def _route(built: dict[str, BuiltPrompt], text: str) -> str:
    return "all" if "all" in built else language_of(text)


def build_prompts(
    engine: Engine, built: dict[str, BuiltPrompt], texts: Sequence[str], stats: runstats.RunStats | None = None
) -> tuple[list[str], list[list[int]]]:
    """Each text's route and token-id prompt, truncated to fit the model length."""
    budget = {route: engine.max_model_len - b.overhead_tokens - 1 for route, b in built.items()}
    routes = [_route(built, t) for t in texts]
    prompts = []
    for route, ids in zip(routes, tokenize_reviews(engine, texts)):
        if len(ids) > budget[route]:
            ids = ids[: budget[route]]
            if stats is not None:
                stats.truncated += 1
        prompts.append(built[route].prompt_ids(ids))
    return routes, prompts


def _score_chunks(
    engine: Engine,
    built: dict[str, BuiltPrompt],
    todo: list[str],
    probs_by_text: dict[str, list[float]],
    stats: runstats.RunStats,
    store: ResultCache | None,
    space: str,
    calibrate_scores: bool,
    chunk_size: int,
    progress: bool,
    isolate_rows: bool,
) -> dict[str, str]:
    """Score ``todo`` chunk by chunk, storing each finished chunk at once; returns the texts that
    failed alone (with ``isolate_rows``) and why."""
    from tqdm.auto import tqdm

    biases = {route: content_free_bias(engine, b) if calibrate_scores else None for route, b in built.items()}
    # One engine call per chunk for every route: ask for the union of their label tokens.
    label_token_ids = list(dict.fromkeys(t for b in built.values() for t in b.label_token_ids))
    columns = {route: [label_token_ids.index(t) for t in b.label_token_ids] for route, b in built.items()}
    n_labels = len(next(iter(built.values())).labels)

    def score_part(texts: list[str]) -> tuple[np.ndarray, list[Any], int]:
        truncated = runstats.RunStats()
        routes, prompts = build_prompts(engine, built, texts, truncated)
        # One engine call per chunk: both routes' prompts batch together, each
        # group still sharing its own cached prefix (the label tokens are the same).
        scored = engine.score_labels(prompts, label_token_ids)
        token_logprobs = np.array([s.label_logprobs for s in scored])
        probs = np.empty((len(texts), n_labels))
        route_array = np.array(routes)
        for route in dict.fromkeys(routes):
            rows = route_array == route
            label_logprobs = built[route].label_logprobs(token_logprobs[rows][:, columns[route]])
            probs[rows] = calibrate(label_probabilities(label_logprobs), biases[route])
        return probs, scored, truncated.truncated

    failed: dict[str, str] = {}
    bar = tqdm(total=len(todo), unit="review", desc="reviewkit", disable=not progress)
    engine_started = time.perf_counter()
    try:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start : start + chunk_size]
            if isolate_rows:
                found = score_apart(chunk, score_part, engine.check_alive)
            else:
                found = Isolated([(0, len(chunk), score_part(chunk))], {})
            for first, stop, (probs, scored, truncated) in found.parts:
                stats.truncated += truncated
                stats.prompt_tokens += sum(s.prompt_tokens for s in scored)
                stats.cached_prompt_tokens += sum(s.cached_tokens for s in scored)
                finished = list(zip(chunk[first:stop], probs.tolist()))
                probs_by_text.update(finished)
                if store is not None:
                    store.put_many(space, finished, model=engine.model_id)
            failed.update((chunk[i], f"{type(exc).__name__}: {exc}") for i, exc in found.failed.items())
            stats.computed += len(chunk)
            bar.update(len(chunk))
    except KeyboardInterrupt:
        stats.interrupted = True
        log.warning(
            "interrupted after %d of %d reviews; finished chunks are %s",
            stats.computed,
            len(todo),
            "cached: re-run to continue" if store is not None else "lost (cache=False)",
        )
        raise
    finally:
        bar.close()
        stats.engine_seconds = time.perf_counter() - engine_started
    if stats.truncated:
        warnings.warn(
            f"{stats.truncated} review(s) were longer than the model length "
            f"({engine.max_model_len} tokens with the prompt) and were truncated",
            stacklevel=4,
        )
    return failed
