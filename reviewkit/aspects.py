"""``score_aspects``: per review, whether each aspect is mentioned and how (positive/negative).

The plain function over a list of texts under ``analyze(aspects=...)``, the seed API, ``reviewkit
serve``, the Ray actor, the benchmark and the notebooks. Two recipes, both on the overall
scoring's parts (tokenizing, calibration, the result cache, :func:`~reviewkit.isolation.score_apart`):

- ``mention="words"`` (default): an aspect is mentioned when its words are in the review, and
  its polarity is that of the clause naming it, scored by :func:`~reviewkit.scoring.score_texts`
  itself: a clause is a few tokens after the cached prefix, and one already scored (a whole
  one-clause review, the same clause in another review) comes from the result cache.
- ``mention="model"``: every aspect is asked three ways after the review, the review's tokens
  computed once for all its questions (:func:`aspect_prompt_ids`); answers are cached per
  (aspect question, text).

Either way, asking for aspects after an overall analysis, or one more aspect later, computes
only what is new.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from reviewkit import activity, aspect_prompts, runstats
from reviewkit.aspect_prompts import (
    ASPECT_LABELS,
    ASPECTS,
    MENTION_MODES,
    POLARITY_LABELS,
    Aspect,
    AspectError,
    aspect_template,
    resolve_aspects,
)
from reviewkit.cache import ResultCache, namespace
from reviewkit.engines.base import Engine
from reviewkit.isolation import score_apart
from reviewkit.prompts import BuiltPrompt, language_of
from reviewkit.scoring import (
    CONTENT_FREE_INPUTS,
    DEFAULT_CHUNK_SIZE,
    _result_cache,
    calibrate,
    clean_text,
    label_probabilities,
    score_texts,
    tokenize_reviews,
    unicode_problem,
)

__all__ = ["ASPECTS", "Aspect", "AspectError", "ScoredAspects", "score_aspects", "resolve_aspects"]

# Bump when the aspect recipe changes: it is part of the result-cache key.
ASPECT_VERSION = "a2"


@dataclass
class ScoredAspects:
    """Aspect labels and scores per input text, in input order.

    ``labels[i][j]`` is ``positive``, ``negative`` or ``none`` (not mentioned) for text ``i``
    and ``aspects[j]``, or None where the text was empty or could not be scored (``errors``).
    ``scores[i, j]`` is the calibrated probability that a mentioned aspect is positive
    (NaN where it is not mentioned or there is no text): what to rank or threshold on.
    """

    aspects: tuple[Aspect, ...]
    labels: list[list[str | None]]
    scores: np.ndarray
    stats: runstats.RunStats
    errors: dict[int, str] = field(default_factory=dict)
    mention: str = "words"


def score_aspects(
    texts: Sequence[Any],
    engine: Engine | None,
    *,
    aspects: Any = True,
    mention: str = "words",
    cache: bool | ResultCache = True,
    calibrate_scores: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = False,
) -> ScoredAspects:
    """Ask each text about each aspect; texts as :func:`reviewkit.scoring.score_texts` takes them.

    Args:
        engine: the engine to ask (None only when nothing needs the model).
        aspects: ``True`` (taste, service, price, portion, wait), names of those, or
            :class:`~reviewkit.Aspect` objects for custom ones.
        mention: ``"words"`` (default): an aspect is mentioned when one of its words is in
            the review, and only mentioned aspects are asked about (positive or negative);
            ``"model"``: every aspect is asked positive / negative / none.
        cache, calibrate_scores, chunk_size, progress: as for ``score_texts``
            (``chunk_size`` counts questions).

    A text that is not valid Unicode, or that the engine fails on alone, gets None labels
    and its reason in ``errors``; the others are answered. Duplicate texts are asked once.
    """
    started = time.perf_counter()
    if mention not in MENTION_MODES:
        raise ValueError(f"mention must be one of {MENTION_MODES}, got {mention!r}")
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    chosen = resolve_aspects(aspects)
    cleaned = [clean_text(t) for t in texts]
    stats = runstats.RunStats(rows=len(cleaned), empty_rows=sum(t is None for t in cleaned))
    unique = list(dict.fromkeys(t for t in cleaned if t is not None))
    stats.unique_texts = len(unique)
    problems = {t: why for t in unique if (why := unicode_problem(t)) is not None}
    unique = [t for t in unique if t not in problems]
    labels = POLARITY_LABELS if mention == "words" else ASPECT_LABELS
    # The questions to ask: (text, aspect index); with "words" only mentioned aspects.
    cells = [(t, j) for t in unique for j, a in enumerate(chosen) if mention == "model" or a.mentioned_in(t)]
    answers: dict[tuple[str, int], list[float]] = {}
    if cells:
        if engine is None:
            raise ValueError(f"{len(cells)} aspect question(s) need an engine, and none was given")
        stats.model = engine.model_id
        options = dict(cache=cache, calibrate_scores=calibrate_scores, chunk_size=chunk_size, progress=progress)
        with activity.working("aspects"):
            if mention == "words":
                problems.update(_answer_clauses(engine, chosen, cells, answers, stats, **options))
            else:
                problems.update(_answer_after_review(engine, chosen, cells, answers, stats, labels, **options))

    out_labels: list[list[str | None]] = []
    scores = np.full((len(cleaned), len(chosen)), np.nan)
    errors: dict[int, str] = {}
    for row, text in enumerate(cleaned):
        if text is None or text in problems:
            if text is not None:
                errors[row] = problems[text]
            out_labels.append([None] * len(chosen))
            continue
        row_labels: list[str | None] = []
        for j in range(len(chosen)):
            probs = answers.get((text, j))
            if probs is None:
                row_labels.append("none")
                continue
            label = labels[int(np.argmax(probs))]
            row_labels.append(label)
            if label != "none":
                scores[row, j] = probs[0] / (probs[0] + probs[1])
        out_labels.append(row_labels)
    stats.label_counts = {a.name: sum(r[j] not in (None, "none") for r in out_labels) for j, a in enumerate(chosen)}
    stats.seconds = time.perf_counter() - started
    return ScoredAspects(chosen, out_labels, scores, stats, errors, mention)


def _answer_clauses(
    engine: Engine,
    chosen: tuple[Aspect, ...],
    cells: list[tuple[str, int]],
    answers: dict[tuple[str, int], list[float]],
    stats: runstats.RunStats,
    **options: Any,
) -> dict[str, str]:
    """``mention="words"``: each mentioned aspect's polarity is that of the clause that names it,
    scored by :func:`~reviewkit.scoring.score_texts` (the overall prompt, calibration and result
    cache): measured on the selection half, the 270M model reads a short clause's polarity far
    better than a question about one aspect after the whole review (README, Aspects).
    Returns the texts whose clauses failed alone, and why."""
    clause_of = {(text, j): chosen[j].clause(text) or text for text, j in cells}
    clauses = list(dict.fromkeys(clause_of.values()))
    scored = score_texts(clauses, engine, labels=POLARITY_LABELS, isolate_rows=True, record=False, **options)
    position = {clause: i for i, clause in enumerate(clauses)}
    failed = {clauses[i]: why for i, why in scored.errors.items()}
    for cell, clause in clause_of.items():
        if clause not in failed:
            answers[cell] = scored.probs[position[clause]].tolist()
    found = scored.stats
    for name in (
        "cache",
        "cached",
        "computed",
        "truncated",
        "engine_seconds",
        "prompt_tokens",
        "cached_prompt_tokens",
        "remote_requests",
        "remote_retries",
        "remote_wait_seconds",
    ):
        setattr(stats, name, getattr(found, name))
    return {text: failed[clause] for (text, _), clause in clause_of.items() if clause in failed}


def _answer_after_review(
    engine: Engine,
    chosen: tuple[Aspect, ...],
    cells: list[tuple[str, int]],
    answers: dict[tuple[str, int], list[float]],
    stats: runstats.RunStats,
    labels: tuple[str, ...],
    *,
    cache: bool | ResultCache,
    calibrate_scores: bool,
    chunk_size: int,
    progress: bool,
) -> dict[str, str]:
    """``mention="model"``: every aspect asked after the review, the review's tokens computed once
    for all its questions; answers cached per (aspect question, text)."""
    built = {
        lang: aspect_template(lang, labels).build(engine.tokenizer, engine.prefix_block_size) for lang in ("ko", "en")
    }
    spaces = [
        namespace(
            engine.cache_identity,
            ASPECT_VERSION,
            f"clause={aspect_prompts.QUOTE_CLAUSE}",
            str(calibrate_scores),
            a.version,
            *(f"{k}={b.version}" for k, b in sorted(built.items())),
        )
        for a in chosen
    ]
    store = _result_cache(cache)
    stats.cache = store.status if store is not None else "off (cache=False)"
    if store is not None:
        for j, space in enumerate(spaces):
            wanted = [t for t, k in cells if k == j]
            answers.update(((t, j), p) for t, p in store.get_many(space, wanted).items())
    stats.cached = len(answers)
    todo = [cell for cell in cells if cell not in answers]
    if not todo:
        return {}
    mark = runstats.figures_mark(engine.figures)
    failed = _ask(engine, built, chosen, todo, answers, stats, store, spaces, calibrate_scores, chunk_size, progress)
    stats.add_engine_figures(engine.figures, mark)
    return failed


def aspect_prompt_ids(engine: Engine, built: BuiltPrompt, review_ids: list[int], question_ids: list[int]) -> list[int]:
    """prefix + review + newlines to a whole KV block + question + answer tag.

    The padding makes the review's last block a full one, so the prefix cache serves every
    review token to the review's later questions (vLLM caches whole blocks only).
    """
    newline = engine.memo.setdefault("newline_ids", engine.tokenizer("\n", add_special_tokens=False)["input_ids"])
    head = len(built.prefix_ids) + len(review_ids)
    padding = (-head) % max(1, engine.prefix_block_size) if len(newline) == 1 else 0
    return [*built.prefix_ids, *review_ids, *newline * padding, *question_ids, *built.suffix_ids]


def _ask(
    engine: Engine,
    built: dict[str, BuiltPrompt],
    chosen: tuple[Aspect, ...],
    todo: list[tuple[str, int]],
    answers: dict[tuple[str, int], list[float]],
    stats: runstats.RunStats,
    store: ResultCache | None,
    spaces: list[str],
    calibrate_scores: bool,
    chunk_size: int,
    progress: bool,
) -> dict[str, str]:
    """Ask ``todo`` chunk by chunk (a review's questions together), caching each chunk."""
    from tqdm.auto import tqdm

    block = max(1, engine.prefix_block_size)
    biases = {
        (lang, j): _content_free_bias(engine, built[lang], a, lang) if calibrate_scores else None
        for lang in built
        for j, a in enumerate(chosen)
    }
    token_ids = built["ko"].label_token_ids
    if built["en"].label_token_ids != token_ids:
        raise RuntimeError("the Korean and English aspect prompts read different label tokens")

    def ask_part(cells: list[tuple[str, int]]) -> tuple[np.ndarray, list[Any], int]:
        texts = list(dict.fromkeys(t for t, _ in cells))
        ids = dict(zip(texts, tokenize_reviews(engine, texts)))
        keys = [(language_of(text), j) for text, j in cells]
        lines = [chosen[j].question(lang, chosen[j].clause(text)) for (text, _), (lang, j) in zip(cells, keys)]
        questions = engine.tokenizer(lines, add_special_tokens=False)["input_ids"]
        prompts, truncated = [], 0
        for (text, _), (lang, _), question in zip(cells, keys, questions):
            review = ids[text]
            budget = engine.max_model_len - built[lang].overhead_tokens - len(question) - block - 1
            if len(review) > budget:
                review, truncated = review[: max(0, budget)], truncated + 1
            prompts.append(aspect_prompt_ids(engine, built[lang], review, list(question)))
        scored = engine.score_labels(prompts, token_ids)
        probs = np.empty((len(cells), len(built["ko"].labels)))
        for i, (key, s) in enumerate(zip(keys, scored)):
            logprobs = built[key[0]].label_logprobs([s.label_logprobs])
            probs[i] = calibrate(label_probabilities(logprobs), biases[key])[0]
        return probs, scored, truncated

    failed_cells: dict[tuple[str, int], str] = {}
    bar = tqdm(total=len(todo), unit="question", desc="aspects", disable=not progress)
    engine_started = time.perf_counter()
    truncated_texts: set[str] = set()
    try:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start : start + chunk_size]
            found = score_apart(chunk, ask_part, engine.check_alive)
            for first, stop, (probs, scored, truncated) in found.parts:
                if truncated:
                    truncated_texts.update(t for t, _ in chunk[first:stop])
                stats.prompt_tokens += sum(s.prompt_tokens for s in scored)
                stats.cached_prompt_tokens += sum(s.cached_tokens for s in scored)
                finished = list(zip(chunk[first:stop], probs.tolist()))
                answers.update(finished)
                if store is not None:
                    for j, space in enumerate(spaces):
                        mine = [(t, p) for (t, k), p in finished if k == j]
                        if mine:
                            store.put_many(space, mine, model=engine.model_id)
            failed_cells.update((chunk[i], f"{type(exc).__name__}: {exc}") for i, exc in found.failed.items())
            stats.computed += len(chunk)
            bar.update(len(chunk))
    except KeyboardInterrupt:
        stats.interrupted = True
        raise
    finally:
        bar.close()
        stats.engine_seconds = time.perf_counter() - engine_started
    stats.truncated = len(truncated_texts)
    return {text: why for (text, _), why in failed_cells.items()}


def _content_free_bias(engine: Engine, built: BuiltPrompt, aspect: Aspect, language: str) -> np.ndarray:
    """The aspect prompt's label lean on content-free reviews (each quoted as its own clause),
    per aspect and language (memoised)."""
    memo = engine.memo.setdefault("aspect_content_free_bias", {})
    key = (built.version, aspect.question(language), aspect.question(language, "-"))
    if key not in memo:
        inputs = list(CONTENT_FREE_INPUTS)
        ids = tokenize_reviews(engine, inputs)
        lines = [aspect.question(language, x or None) for x in inputs]
        questions = engine.tokenizer(lines, add_special_tokens=False)["input_ids"]
        scored = engine.score_labels(
            [aspect_prompt_ids(engine, built, x, list(q)) for x, q in zip(ids, questions)], built.label_token_ids
        )
        memo[key] = label_probabilities(built.label_logprobs([s.label_logprobs for s in scored])).mean(axis=0)
    return memo[key]


def aspect_frame_columns(scored: ScoredAspects) -> dict[str, Any]:
    """The columns ``analyze`` adds: ``aspect_<name>`` (a Categorical of positive/negative/none,
    NaN without text) and ``aspect_<name>_score`` (P(positive) of a mentioned aspect)."""
    import pandas as pd

    from reviewkit.aspect_prompts import aspect_columns

    columns: dict[str, Any] = {}
    for j, aspect in enumerate(scored.aspects):
        label_column, score_column = aspect_columns(aspect)
        columns[label_column] = pd.Categorical([row[j] for row in scored.labels], categories=list(ASPECT_LABELS))
        columns[score_column] = scored.scores[:, j]
    return columns
