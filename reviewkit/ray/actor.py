"""The Ray Data actor that holds one engine.

``ReviewScorer`` is the callable class given to ``Dataset.map_batches``: Ray starts one per
pool slot, each loads its engine once (``reviewkit.load``) and scores every batch it is sent
with :func:`reviewkit.scoring.score_texts`, so labels and scores are ``analyze``'s; asked for
aspects, it then asks them with :func:`reviewkit.aspects.score_aspects`, as
``analyze(aspects=...)`` does, and adds the same ``aspect_<name>`` columns.

Failures are sorted by who can fix them. A bad row is this row's problem: it gets NaN and
an ``error`` value and its batch goes on. A dead engine is the actor's problem: the actor
exits its process, Ray (``max_restarts=-1``, Ray Data's default for actor pools) starts a
new one, which loads a new engine, and Ray Data retries the batch there.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from reviewkit.aspect_prompts import Aspect, aspect_columns
from reviewkit.aspects import score_aspects
from reviewkit.engines.base import EngineDeadError
from reviewkit.isolation import score_apart
from reviewkit.process_engine import load
from reviewkit.scoring import SCORE, SENTIMENT, score_texts

log = logging.getLogger("reviewkit")

ERROR = "error"
# The result columns without aspects (with them: :func:`result_types`).
RESULT_COLUMNS = (SENTIMENT, SCORE, ERROR)
RESULT_TYPES = {SENTIMENT: pa.string(), SCORE: pa.float64(), ERROR: pa.string()}
#: Internal columns a DataFrame's rows travel with (dropped from every result).
POSITION = "__reviewkit_row"
PRESET_ERROR = "__reviewkit_error"
#: How often a busy actor checks that its engine is alive.
WATCH_SECONDS = 1.0
#: The ``error`` of a row with no text (NaN, None, empty, blank): no model call was made.
NO_TEXT = "no text"
#: The start of the ``error`` of a row whose overall label was scored and its aspects were not.
ASPECT_ERROR = "aspects: "


def result_types(aspects: Sequence[Aspect] = ()) -> dict[str, pa.DataType]:
    """The result columns, in order: the overall two, each aspect's two (as ``analyze``'s), ``error``."""
    types = {SENTIMENT: pa.string(), SCORE: pa.float64()}
    for aspect in aspects:
        label_column, score_column = aspect_columns(aspect)
        types[label_column], types[score_column] = pa.string(), pa.float64()
    types[ERROR] = pa.string()
    return types


def score_rows(
    texts: Sequence[Any], score: Callable[[list[Any]], Any], check_alive: Callable[[], None] = lambda: None
) -> tuple[list, list, list]:
    """Sentiments, scores and errors of ``texts``; a row that fails scoring fails alone
    (:func:`reviewkit.isolation.score_apart`: the batch, then its halves, down to the culprits;
    a dead engine raises). The engine is taken to work (it loaded and warmed up), so a batch
    whose every row fails gets an error per row."""
    texts = list(texts)
    found = score_apart(texts, score, check_alive, engine_works=True)
    sentiments: list = [None] * len(texts)
    scores: list = [math.nan] * len(texts)
    errors: list = [None] * len(texts)
    for row, exc in found.failed.items():
        errors[row] = f"{type(exc).__name__}: {exc}"
    for start, stop, scored in found.parts:
        sentiments[start:stop] = scored.sentiments()
        scores[start:stop] = scored.scores().tolist()
        errors[start:stop] = [NO_TEXT if s is None else None for s in sentiments[start:stop]]
    return sentiments, scores, errors


def score_aspect_rows(
    texts: Sequence[Any],
    n_aspects: int,
    score: Callable[[list[Any]], Any],
    check_alive: Callable[[], None] = lambda: None,
) -> tuple[list, list, list]:
    """Per aspect, the labels and scores of ``texts`` (``labels[j][row]``), and each row's error
    (None if its aspects were answered or it has no text). ``score`` is ``score_aspects`` on a
    list; a row fails alone as in :func:`score_rows` (a row ``score_aspects`` reports in its
    ``errors``, or one that fails every call it is in); a dead engine raises."""
    texts = list(texts)
    found = score_apart(texts, score, check_alive, engine_works=True)
    labels: list[list] = [[None] * len(texts) for _ in range(n_aspects)]
    scores: list[list] = [[math.nan] * len(texts) for _ in range(n_aspects)]
    errors: list = [None] * len(texts)
    for row, exc in found.failed.items():
        errors[row] = f"{type(exc).__name__}: {exc}"
    for start, _stop, scored in found.parts:
        for j in range(n_aspects):
            for i, row_labels in enumerate(scored.labels):
                labels[j][start + i] = row_labels[j]
                scores[j][start + i] = float(scored.scores[i, j])
        for i, why in scored.errors.items():
            errors[start + i] = why
    return labels, scores, errors


class ReviewScorer:
    """One engine per actor; ``__call__`` scores one ``pyarrow.Table`` batch.

    ``mode`` says what a batch gives back: ``"return"`` (row positions and results, for a
    DataFrame), ``"append"`` (the batch with the result columns, for a lazy Dataset) or
    ``"write"`` (results written as a part file of ``output``; one summary row back).
    ``aspects`` (resolved :class:`~reviewkit.Aspect` objects) and ``mention`` are
    ``analyze``'s; no aspects, no aspect columns.
    """

    def __init__(
        self,
        *,
        engine_options: dict[str, Any],
        labels: tuple[str, ...],
        text: str,
        id_column: str | None,
        mode: str,
        output: Any = None,
        cache: bool = False,
        figures: Any = None,
        run: str = "",
        aspects: tuple[Aspect, ...] = (),
        mention: str = "words",
    ) -> None:
        import ray

        started = time.perf_counter()
        self.engine = load(**engine_options)
        self.labels, self.text, self.id_column, self.mode = labels, text, id_column, mode
        self.aspects, self.mention = tuple(aspects), mention
        self.output, self.cache, self.figures, self.run = output, cache, figures, run
        if output is not None:  # refuse to mix two models' scores in one folder
            output.claim_model(self.engine.model_id)
        # vLLM's blocking generate() can wait forever once its engine process is gone (its
        # monitor marks the engine dead, but the waiting call is not woken), so a thread
        # checks the engine while a batch runs and ends the actor if it has died.
        self._busy = threading.Event()
        threading.Thread(target=self._watch_engine, daemon=True, name="reviewkit-engine-watch").start()
        context = ray.get_runtime_context()
        self.key = context.get_actor_id() or f"pid-{os.getpid()}"
        if figures is not None:
            figures.started.remote(
                self.key, os.getpid(), context.get_node_id(), time.perf_counter() - started, __file__
            )

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.perf_counter()
        self._busy.set()
        texts = batch.column(self.text).to_pylist()
        try:
            self.engine.check_alive()
            sentiments, scores, errors = score_rows(texts, self._score, self.engine.check_alive)
            results: dict[str, list] = {SENTIMENT: sentiments, SCORE: scores}
            if self.aspects:
                labels, aspect_scores, aspect_errors = score_aspect_rows(
                    texts, len(self.aspects), self._score_aspects, self.engine.check_alive
                )
                for j, aspect in enumerate(self.aspects):
                    label_column, score_column = aspect_columns(aspect)
                    results[label_column], results[score_column] = labels[j], aspect_scores[j]
                # one error per row: the overall label's, else its aspects'
                errors = [
                    e if e is not None or a is None else ASPECT_ERROR + a
                    for e, a in zip(errors, aspect_errors, strict=True)
                ]
        except EngineDeadError as exc:
            self._exit_for_restart(exc)
        finally:
            self._busy.clear()
        if PRESET_ERROR in batch.column_names:  # rows the driver could not turn into text
            preset = batch.column(PRESET_ERROR).to_pylist()
            errors = [p if p is not None else e for p, e in zip(preset, errors, strict=True)]
        results[ERROR] = errors
        out = self._output(batch, results)
        if self.figures is not None:
            self.figures.finished_batch.remote(self.key, batch.num_rows, time.perf_counter() - started)
        return out

    def _score(self, texts: list[Any]) -> Any:
        return score_texts(texts, self.engine, labels=self.labels, cache=self.cache, progress=False)

    def _score_aspects(self, texts: list[Any]) -> Any:
        return score_aspects(
            texts, self.engine, aspects=self.aspects, mention=self.mention, cache=self.cache, progress=False
        )

    def _output(self, batch: pa.Table, results: dict[str, list]) -> pa.Table:
        types = result_types(self.aspects)
        columns = {name: pa.array(results[name], type=kind) for name, kind in types.items()}
        if self.mode == "return":
            return pa.table({POSITION: batch.column(POSITION), **columns})
        if self.mode == "append":
            kept = [n for n in batch.column_names if n not in types]
            table = batch.select(kept)
            for name, array in columns.items():
                table = table.append_column(name, array)
            return table
        ids = batch.column(self.id_column)
        part = self.output.write_part(pa.table({self.id_column: ids, **columns}), ids.to_pylist(), self.run)
        no_text = sum(e == NO_TEXT for e in results[ERROR])
        return pa.table(
            {
                "part": [part],
                "rows": [batch.num_rows],
                "no_text": [no_text],
                "errors": [sum(e is not None for e in results[ERROR]) - no_text],
            }
        )

    def _watch_engine(self) -> None:
        while True:
            time.sleep(WATCH_SECONDS)
            if self._busy.is_set():
                try:
                    self.engine.check_alive()
                except EngineDeadError as exc:
                    self._exit_for_restart(exc)

    def _exit_for_restart(self, exc: BaseException) -> None:
        """Leave the process so Ray replaces this actor (and its engine) and retries the batch.

        ``ray.actor.exit_actor()`` would be a deliberate exit, which Ray does not restart;
        an exiting process is a crash, which it does.
        """
        log.error("reviewkit actor %s: the engine died (%s); exiting so Ray starts a new actor", self.key, exc)
        closer = threading.Thread(target=self.engine.close, daemon=True)  # free what is left of it
        closer.start()
        closer.join(timeout=10)
        os._exit(1)
