"""The driver of ``reviewkit.ray.analyze``: input in, Ray Data pipeline, results and figures out.

It turns the input (a DataFrame, a Dataset, paths) into one Ray block per batch, maps the
blocks through :class:`~reviewkit.ray.actor.ReviewScorer` actors, and collects the results
(a DataFrame in the input's order, a lazy Dataset, or part files in an output folder, see
:mod:`reviewkit.ray.parts`) and the run's figures (:mod:`reviewkit.ray.figures`). With
``aspects=`` the actors also ask :func:`reviewkit.aspects.score_aspects`, and the results
carry ``analyze(aspects=...)``'s ``aspect_<name>`` columns.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from reviewkit import activity
from reviewkit.analysis import check_frame
from reviewkit.aspect_prompts import Aspect
from reviewkit.prompts import DEFAULT_LABELS
from reviewkit.ray.actor import ERROR, NO_TEXT, POSITION, PRESET_ERROR, ReviewScorer
from reviewkit.ray.figures import RayRun, RunFigures
from reviewkit.ray.inputs import (
    aspect_settings,
    batch_blocks,
    check_arguments,
    check_aspects,
    check_ids,
    from_blocks,
    read_texts,
    with_results,
)
from reviewkit.ray.parts import OutputFolder, drop_written
from reviewkit.scoring import DEFAULT_CHUNK_SIZE

if TYPE_CHECKING:  # pragma: no cover
    import ray.data


log = logging.getLogger("reviewkit")

#: Reviews per batch: one ``score_texts`` chunk (its default ``chunk_size``), so an actor's
#: engine gets the batches ``analyze`` gives it in-process, and an interrupt or a crash loses
#: one batch (benchmarks/README.md, *Ray*, has the measurements behind this choice).
DEFAULT_BATCH_SIZE = DEFAULT_CHUNK_SIZE
#: Ray starts its workers at niceness 15, under which anything else on a CPU node (the
#: driver, a notebook, the raylet) preempts the engine's OpenMP threads, and one preempted
#: thread stalls them all. The scoring actors are the job, so they run at niceness 0, as
#: Ray's own job supervisor does.
ACTOR_ENV = {"RAY_worker_niceness": "0"}


_last: RayRun | None = None


def last_run() -> RayRun | None:
    """Figures of the latest ``reviewkit.ray.analyze`` call in this process that ran."""
    return _last


def analyze(
    data: Any,
    text: str = "content",
    id: str = "id",
    *,
    labels: Sequence[str] = DEFAULT_LABELS,
    concurrency: int | tuple[int, int] = 1,
    num_gpus: float | None = None,
    num_cpus: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    engine_options: dict[str, Any] | None = None,
    output: str | os.PathLike[str] | None = None,
    cache: bool = False,
    aspects: Any = None,
    mention: str = "words",
) -> pd.DataFrame | ray.data.Dataset | RayRun:
    """Score ``data`` on a Ray cluster, ``concurrency`` engines at a time.

    Args:
        data: a pandas DataFrame, a ``ray.data.Dataset``, or Parquet/CSV path(s) (files,
            folders, globs or URIs, as ``ray.data.read_parquet``/``read_csv`` take them).
        text: the column with the review text; id: the column with each row's unique id
            (needed with ``output``; otherwise only used if present).
        labels: as for ``reviewkit.analyze``.
        concurrency: actors (engines): an int, or ``(min, max)`` for an autoscaling pool.
        num_gpus: GPUs per actor; default ``tensor_parallel_size`` (1) if the cluster has
            GPUs, else 0. num_cpus: CPUs Ray reserves per actor (default 1; vLLM's CPU
            build still uses every core of its machine).
        batch_size: reviews per batch (one engine call, one part file, one retry unit).
        engine_options: keyword arguments of ``reviewkit.load`` that each actor calls once
            (``{"model": "embedded"}``, ``{"gpu_memory_utilization": 0.85}``, ...).
        output: a folder (local and shared by the nodes, or ``s3://``, ``gs://``...): each
            finished batch is written there as a Parquet part file with the columns
            ``id, sentiment, sentiment_score, error``; a re-run skips ids already written.
        cache: also use each node's on-disk result cache (off: ``output`` is the record).
        aspects, mention: as for ``reviewkit.analyze`` (None: no aspects; ``True``: taste,
            service, price, portion, wait; names; or :class:`~reviewkit.Aspect` objects):
            each actor asks them with ``score_aspects`` after the overall label, and the
            results get ``analyze``'s ``aspect_<name>`` and ``aspect_<name>_score`` columns,
            between ``sentiment_score`` and ``error`` (part files too). An output folder
            records them: resuming it with other aspects or another ``mention`` is refused.

    Returns:
        A DataFrame in gives a copy with ``sentiment``, ``sentiment_score`` (the aspect
        columns) and ``error`` columns, same index and order (also with ``output``). A
        Dataset or paths give a lazy Dataset with those columns appended, or, with
        ``output``, the run's :class:`RayRun`.

    Rows without text get NaN and ``error="no text"``; a row that fails to score gets NaN
    and its error, and its batch goes on; a row whose aspects fail alone keeps its overall
    label and gets NaN aspects and ``error="aspects: <why>"``. Figures of each call that ran: :func:`last_run`.
    Ray is initialised with ``ray.init()`` unless it already is (``RAY_ADDRESS`` connects
    to a running cluster).
    """
    check_arguments(text, id, labels, concurrency, batch_size)
    chosen = check_aspects(aspects, mention, labels, text, id)
    engine_options = dict(engine_options or {})
    run = _Run(
        text=text,
        id_column=id,
        labels=tuple(labels),
        concurrency=concurrency,
        num_gpus=num_gpus,
        num_cpus=num_cpus,
        batch_size=batch_size,
        engine_options=engine_options,
        cache=cache,
        output=OutputFolder(output) if output is not None else None,
        aspects=chosen,
        mention=mention,
    )
    if isinstance(data, pd.DataFrame):
        return run.frame(data)
    return run.dataset(_as_dataset(data))


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError("reviewkit.ray needs Ray Data: pip install 'reviewkit[ray]'") from exc
    if not ray.is_initialized():
        ray.init()  # RAY_ADDRESS (or `ray start` on this machine) joins that cluster, else a local one
    return ray


def _as_dataset(data: Any) -> ray.data.Dataset:
    ray = _ray()
    if isinstance(data, ray.data.Dataset):
        return data
    paths = [os.fspath(data)] if isinstance(data, (str, os.PathLike)) else data
    if not isinstance(paths, list) or not paths or not all(isinstance(p, (str, os.PathLike)) for p in paths):
        raise TypeError(
            "reviewkit.ray.analyze() takes a pandas DataFrame, a ray.data.Dataset or Parquet/CSV "
            f"path(s), got {type(data).__name__}"
        )
    paths = [os.fspath(p) for p in paths]
    kinds = {"csv" if p.lower().endswith((".csv", ".csv.gz")) else "parquet" for p in paths}
    if len(kinds) > 1:
        raise ValueError(f"mixed CSV and Parquet paths: {paths}; analyze them in two calls")
    return ray.data.read_csv(paths) if kinds == {"csv"} else ray.data.read_parquet(paths)


@dataclass
class _Run:
    text: str
    id_column: str
    labels: tuple[str, ...]
    concurrency: int | tuple[int, int]
    num_gpus: float | None
    num_cpus: float | None
    batch_size: int
    engine_options: dict[str, Any]
    cache: bool
    output: OutputFolder | None
    aspects: tuple[Aspect, ...] = ()
    mention: str = "words"
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    # --- DataFrame in, DataFrame out ------------------------------------------------------
    def frame(self, df: pd.DataFrame) -> pd.DataFrame:
        check_frame(df, self.text)
        texts, preset = read_texts(df[self.text].tolist())
        columns = {
            POSITION: pa.array(np.arange(len(df), dtype=np.int64)),
            self.text: pa.array(texts, type=pa.string()),
            PRESET_ERROR: pa.array(preset, type=pa.string()),
        }
        if self.output is None:
            table = pa.table(columns)
            results = self._execute(batch_blocks(table, self.batch_size), "return", rows=len(df))
            results = results.sort_by(POSITION) if results is not None else None
            return with_results(df, results, self.labels, self.aspects)
        if self.id_column not in df.columns:
            raise KeyError(
                f"column {self.id_column!r} not found: output= needs an id column "
                f"(id=...); the DataFrame's columns are {list(df.columns)}"
            )
        try:
            ids = pa.array(df[self.id_column].tolist(), from_pandas=True)  # NaN and None are missing
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise TypeError(f"the ids in {self.id_column!r} must be of one type (all int or all str): {exc}") from exc
        check_ids(ids, self.id_column)
        table = pa.table({self.id_column: ids, **columns})
        with self._holding_output():
            written = self._prepare_output()
            skipped = 0
            if written is not None:
                kept = drop_written(table, self.id_column, written)
                skipped, table = table.num_rows - kept.num_rows, kept
            self._execute(batch_blocks(table, self.batch_size), "write", rows=len(df), skipped=skipped)
        stored = self.output.read()
        if stored is None:  # an empty DataFrame
            return with_results(df, None, self.labels, self.aspects)
        results = stored.to_pandas().set_index(self.id_column).reindex(df[self.id_column].to_numpy())
        return with_results(df, pa.Table.from_pandas(results, preserve_index=False), self.labels, self.aspects)

    # --- Dataset or paths in --------------------------------------------------------------
    def dataset(self, ds: ray.data.Dataset) -> Any:
        schema = ds.schema(fetch_if_missing=False)
        if schema is not None and self.text not in schema.names:
            raise KeyError(f"column {self.text!r} not found; the dataset's columns are {list(schema.names)}")
        if self.output is None:
            return self._map(self._batches(ds), "append", figures=None)  # lazy: runs when consumed
        ray = _ray()
        names = ds.schema().names
        for column in (self.text, self.id_column):
            if column not in names:
                raise KeyError(
                    f"column {column!r} not found (output= needs text and id columns); "
                    f"the dataset's columns are {list(names)}"
                )
        ds = ds.select_columns([self.id_column, self.text])
        chunks = [
            t.column(self.id_column).combine_chunks()
            for t in ray.get(ds.select_columns([self.id_column]).to_arrow_refs())
            if t.num_rows
        ]
        ids = pa.chunked_array(chunks).combine_chunks() if chunks else pa.array([], type=pa.string())
        check_ids(ids, self.id_column)
        with self._holding_output():
            written = self._prepare_output()
            skipped = 0
            if written is not None:
                skipped = int(pc.sum(pc.is_in(ids, value_set=written.cast(ids.type))).as_py() or 0)
                ds = ds.map_batches(
                    drop_written,
                    batch_format="pyarrow",
                    zero_copy_batch=True,
                    fn_kwargs={"id_column": self.id_column, "written": ray.put(written)},
                )
            return self._execute(self._batches(ds), "write", rows=len(ids), skipped=skipped, run_only=True)

    def _batches(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        """One block per batch (a file read is one block): each batch is then its own task, so
        actors share the work, and a crash or an interrupt costs one batch, not a whole file."""
        return ds.repartition(target_num_rows_per_block=self.batch_size, strict=True)

    # --- shared ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _holding_output(self) -> Iterator[None]:
        """The output folder's lease for the whole run (one run per folder at a time)."""
        assert self.output is not None
        self.output.create()
        self.output.acquire(self.run_id)
        stop = threading.Event()
        self.output.keep_lease(self.run_id, stop)
        try:
            yield
        finally:
            stop.set()
            self.output.release(self.run_id)

    def _prepare_output(self) -> pa.Array | None:
        """Check the settings, remove what interrupted runs left, and read the ids already written."""
        assert self.output is not None
        self.output.check_settings(
            json.loads(
                json.dumps(
                    {
                        "id": self.id_column,
                        "text": self.text,
                        "labels": list(self.labels),
                        "engine_options": self.engine_options,
                        **aspect_settings(self.aspects, self.mention),
                    },
                    default=repr,
                )
            )
        )
        removed = self.output.remove_temporary(keep_run=self.run_id)
        if removed:
            log.info("removed %d half-written file(s) an interrupted run left in %s", removed, self.output.uri)
        return self.output.written_ids(self.id_column)

    def _map(self, ds: ray.data.Dataset, mode: str, figures: Any) -> ray.data.Dataset:
        ray = _ray()
        num_gpus = self.num_gpus
        if num_gpus is None:
            tensor_parallel = self.engine_options.get("tensor_parallel_size") or 1
            num_gpus = tensor_parallel if ray.cluster_resources().get("GPU", 0) > 0 else 0
        sizes = self.concurrency if isinstance(self.concurrency, tuple) else (self.concurrency,) * 2
        # Two batches per actor: one in the engine, the next one already there.
        compute = ray.data.ActorPoolStrategy(min_size=sizes[0], max_size=sizes[1], max_tasks_in_flight_per_actor=2)
        return ds.map_batches(
            ReviewScorer,
            batch_size=self.batch_size,
            batch_format="pyarrow",
            compute=compute,
            num_cpus=1 if self.num_cpus is None else self.num_cpus,
            num_gpus=num_gpus or None,
            udf_modifying_row_count=mode == "write",
            runtime_env={"env_vars": ACTOR_ENV},
            fn_constructor_kwargs={
                "engine_options": self.engine_options,
                "labels": self.labels,
                "text": self.text,
                "id_column": self.id_column,
                "mode": mode,
                "output": self.output,
                "cache": self.cache,
                "figures": figures,
                "run": self.run_id,
                "aspects": self.aspects,
                "mention": self.mention,
            },
        )

    def _execute(self, source: Any, mode: str, *, rows: int, skipped: int = 0, run_only: bool = False) -> Any:
        """Run the pipeline to the end, collecting its output and the run's figures."""
        global _last
        ray = _ray()
        started = time.perf_counter()
        figures = ray.remote(num_cpus=0)(RunFigures).remote()
        stats = RayRun(rows=rows, skipped=skipped, output=self.output.uri if self.output else None)
        pieces: list[pa.Table] = []
        try:
            ds = source if isinstance(source, ray.data.Dataset) else from_blocks(ray, source)
            # The driver's machine counts as busy for the idle watchdog while the run lasts
            # (the actors' machines mark themselves busy while they score).
            with activity.working("ray"):
                for batch in (
                    ()
                    if ds is None
                    else self._map(ds, mode, figures).iter_batches(batch_size=None, batch_format="pyarrow")
                ):
                    pieces.append(batch)
                    stats.scored += sum(batch.column("rows").to_pylist()) if mode == "write" else batch.num_rows
        except KeyboardInterrupt:
            stats.interrupted = True
            log.warning(
                "interrupted: %d of %d rows finished%s",
                stats.scored,
                rows - skipped,
                "; they are in the output folder: run the same call again to continue" if self.output else "",
            )
            raise
        finally:
            self._finish(stats, pieces, mode, figures, started)
            _last = stats
        if run_only:
            return stats
        return pa.concat_tables(pieces) if pieces else None

    def _finish(self, stats: RayRun, pieces: list[pa.Table], mode: str, figures: Any, started: float) -> None:
        ray = _ray()
        try:
            stats.per_actor = ray.get(figures.snapshot.remote(), timeout=30)
        except Exception as exc:  # figures are a report, never a reason to fail the run
            log.warning("could not read the run's figures: %s", exc)
        ray.kill(figures)
        stats.actors = len(stats.per_actor)
        stats.restarts = sum(max(a["starts"] - 1, 0) for a in stats.per_actor.values())
        if mode == "write":
            stats.parts = sum(p.num_rows for p in pieces)
            stats.no_text = sum(sum(p.column("no_text").to_pylist()) for p in pieces)
            stats.errors = sum(sum(p.column("errors").to_pylist()) for p in pieces)
        else:
            errors = [e for p in pieces for e in p.column(ERROR).to_pylist()]
            stats.no_text = errors.count(NO_TEXT)
            stats.errors = sum(e is not None for e in errors) - stats.no_text
        stats.seconds = time.perf_counter() - started
        log.info("reviewkit.ray: %s", stats)
