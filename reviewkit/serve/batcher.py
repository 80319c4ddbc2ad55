"""Gather concurrent requests into one ``score_texts`` call, from a bounded queue.

An engine scores a batch of 300 reviews in little more time than one review: the
prompts share their prefix in the KV cache and fill the forward pass together. Serving
32 clients one request at a time behind the engine's lock would waste that, so
requests queue here; the collector takes the first, waits a short bounded time
(``wait_s``) for others, and scores all their texts in one call on the batcher's own
scoring thread while new requests queue for the next one. The event loop never blocks
on the engine, and nothing else (``/health``, other threads) waits behind it.

The queue holds at most ``queue_limit`` reviews (a request past it is refused at once,
:class:`QueueFull`), so a flood costs memory in proportion to the limit, not to the flood.
A batch that fails is scored apart (:func:`reviewkit.isolation.score_apart`): only the
request whose reviews fail alone gets an error (:class:`UnscorableReviews`, naming them),
the others their answers.

Aspects (:func:`reviewkit.aspects.score_aspects`) are a second engine call of the same batch,
on the same scoring thread, under the liveness watch's deadline: once the batch's overall
scores are in, the requests without aspects are answered at once, then the texts of the
requests that asked are asked their aspects, one call per distinct aspect set. A failure
there fails only the requests of that set (tried apart when it fails in company), never
those without aspects; the next batch waits for it, as it would for any engine call.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reviewkit.aspect_prompts import Aspect
from reviewkit.aspects import ScoredAspects, score_aspects
from reviewkit.cache import ResultCache
from reviewkit.engines.base import Engine, EngineDeadError
from reviewkit.isolation import Isolated, score_apart
from reviewkit.prompts import PromptTemplate
from reviewkit.scoring import ScoredTexts, clean_text, score_texts
from reviewkit.serve.liveness import DaemonWorker, EngineWatch

log = logging.getLogger("reviewkit.serve")

#: The batches whose speed sizes the default queue limit.
RATE_WINDOW = 20


class EngineUnavailable(RuntimeError):
    """No engine, or the engine failed this batch; the request may be retried later."""


class QueueFull(EngineUnavailable):
    """The queue holds its limit of reviews; retry later."""


class UnscorableReviews(ValueError):
    """Reviews of this request that fail to score even alone: position -> why."""

    def __init__(self, errors: dict[int, str]) -> None:
        super().__init__("; ".join(f"review {i}: {e}" for i, e in sorted(errors.items())))
        self.errors = errors


#: A request's answer: the overall scores, and its aspects when it asked for some.
Answer = tuple[ScoredTexts, ScoredAspects | None]


@dataclass
class _Job:
    texts: list[Any]
    future: asyncio.Future = field(repr=False)
    aspects: tuple[Aspect, ...] = ()
    queued: bool = True


class Batcher:
    """``await batcher.score(texts)`` from many requests; one engine call per gathered batch."""

    def __init__(
        self,
        engine: Engine | None,
        *,
        labels: Sequence[str],
        prompt: PromptTemplate | None = None,
        cache: bool | ResultCache = True,
        wait_s: float = 0.005,
        max_batch_texts: int = 1024,
        max_queue_texts: int | None = None,
        queue_wait_s: float = 60.0,
        mention: str = "words",
    ) -> None:
        self.engine = engine
        self.watch: EngineWatch | None = None
        self.labels = tuple(labels)
        self.prompt = prompt
        self.cache = cache
        self.wait_s = wait_s
        self.max_batch_texts = max_batch_texts
        self.max_queue_texts = max_queue_texts
        self.queue_wait_s = queue_wait_s
        self.mention = mention
        self.batches = 0
        self.last_error: str | None = None
        self.closed: str | None = None  # why no more jobs are taken (a dead engine, the server stopping)
        self.queued_texts = 0
        self._queue: collections.deque[_Job] = collections.deque()
        self._running: list[_Job] = []
        self._rate: collections.deque[tuple[int, float]] = collections.deque(maxlen=RATE_WINDOW)
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._worker: DaemonWorker | None = None

    @property
    def queue_limit(self) -> int:
        """Reviews the queue may hold: the set limit, else what the engine scores in ``queue_wait_s``."""
        if self.max_queue_texts is not None:
            return self.max_queue_texts
        texts, seconds = sum(n for n, _ in self._rate), sum(s for _, s in self._rate)
        measured = int(texts / seconds * self.queue_wait_s) if seconds > 0 else 0
        return max(2 * self.max_batch_texts, measured)

    def full(self) -> bool:
        """No room for another request (the server refuses it before reading its body)."""
        return self.queued_texts >= self.queue_limit

    def full_reason(self) -> str:
        return f"the queue is full ({self.queued_texts} reviews waiting, limit {self.queue_limit})"

    def start(self) -> None:
        """Start the collector on the running loop (the app's lifespan does it)."""
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._worker = self._worker or DaemonWorker("reviewkit-score")
            self._task = asyncio.get_running_loop().create_task(self._collect(), name="reviewkit-batcher")

    async def stop(self) -> None:
        """Stop the collector; jobs still queued (uvicorn has drained the requests) get 503.

        Never waits for an engine call in progress: a stuck engine must not hold the exit.
        """
        self.fail_all(self.closed or "the server is stopping")
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def fail_all(self, reason: str) -> None:
        """Refuse new jobs and fail the queued and running ones with ``reason`` (503)."""
        self.closed = self.closed or reason
        self.fail_running(reason)
        while self._queue:
            self._fail(self._pop(), reason)

    def fail_running(self, reason: str) -> None:
        """Fail the jobs of the engine call in progress (it is stuck); their results are dropped."""
        for job in self._running:
            self._fail(job, reason)

    @staticmethod
    def _fail(job: _Job, reason: str) -> None:
        if not job.future.done():
            job.future.set_exception(EngineUnavailable(reason))

    async def score(self, texts: list[Any]) -> ScoredTexts:
        """The scores of ``texts`` (any values; see :func:`~reviewkit.scoring.clean_text`), in order."""
        return (await self.analyze(texts))[0]

    async def analyze(self, texts: list[Any], aspects: tuple[Aspect, ...] = ()) -> Answer:
        """The scores of ``texts`` and, when ``aspects`` are given, their aspects, in order.

        Texts without content never reach the engine, so a request of only empty
        reviews is answered without one.
        """
        if all(clean_text(t) is None for t in texts):
            scored = score_texts(texts, None, labels=self.labels, prompt=self.prompt, progress=False)
            return scored, score_aspects(texts, None, aspects=aspects, mention=self.mention) if aspects else None
        if self.closed is not None:
            raise EngineUnavailable(self.closed)
        if self.engine is None:
            raise EngineUnavailable("no engine is loaded")
        if self._wakeup is None:
            raise EngineUnavailable("the server is not started (its lifespan has not run)")
        if self.queued_texts and self.queued_texts + len(texts) > self.queue_limit:
            raise QueueFull(self.full_reason())
        job = _Job(list(texts), asyncio.get_running_loop().create_future(), tuple(aspects))
        job.future.add_done_callback(lambda _: self._dequeue(job))
        self._queue.append(job)
        self.queued_texts += len(job.texts)
        self._wakeup.set()
        return await job.future

    def _dequeue(self, job: _Job) -> None:
        if job.queued:
            job.queued = False
            self.queued_texts -= len(job.texts)

    def _pop(self) -> _Job:
        job = self._queue.popleft()
        self._dequeue(job)
        return job

    async def _collect(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            jobs, size = [], 0
            deadline = loop.time() + self.wait_s
            while size < self.max_batch_texts:
                while self._queue and size < self.max_batch_texts:
                    job = self._pop()
                    if not job.future.done():  # a request that timed out or hung up is not scored
                        jobs.append(job)
                        size += len(job.texts)
                remaining = deadline - loop.time()
                if size >= self.max_batch_texts or remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
            if jobs:
                await self._run(jobs)

    async def _run(self, jobs: list[_Job]) -> None:
        """Score the jobs in one call on the scoring thread; hand each job its rows or its error."""
        assert self._worker is not None
        self._running = jobs
        started = time.perf_counter()
        texts = [job.texts for job in jobs]
        try:
            results = await asyncio.wrap_future(self._worker.submit(lambda: self._score_jobs(texts)))
        except Exception as exc:  # noqa: BLE001 - every engine failure goes back to its requests as a 503
            return self._engine_failed(exc, jobs, "")
        finally:
            self._running = []
        self.batches += 1
        failures = [r for r in results if isinstance(r, EngineUnavailable)]
        self.last_error = str(failures[0])[:300] if failures else None
        asking: list[tuple[_Job, ScoredTexts]] = []
        for job, result in zip(jobs, results, strict=True):
            if job.future.done():  # failed meanwhile (a stuck call), timed out, or the client hung up
                continue
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            elif job.aspects:
                asking.append((job, result))
            else:
                job.future.set_result((result, None))
        if asking:
            await self._run_aspects(asking)
        self._rate.append((sum(map(len, texts)), time.perf_counter() - started))

    async def _run_aspects(self, asking: list[tuple[_Job, ScoredTexts]]) -> None:
        """The aspects of the requests that asked, after the batch's overall scores (those without
        aspects are answered already); each request gets both, or its own error."""
        assert self._worker is not None
        jobs = [job for job, _ in asking]
        self._running = jobs
        wanted = [(job.texts, job.aspects) for job in jobs]
        try:
            results = await asyncio.wrap_future(self._worker.submit(lambda: self._aspect_jobs(wanted)))
        except Exception as exc:  # noqa: BLE001 - a dead engine, or one that failed every set
            return self._engine_failed(exc, jobs, "aspect ")
        finally:
            self._running = []
        self.batches += 1
        failures = [r for r in results if isinstance(r, EngineUnavailable)]
        self.last_error = str(failures[0])[:300] if failures else self.last_error
        for (job, scored), result in zip(asking, results, strict=True):
            if job.future.done():
                continue
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result((scored, result))

    def _engine_failed(self, exc: Exception, jobs: list[_Job], what: str) -> None:
        """An engine call that failed as a whole: 503 to its requests; a dead in-process engine is declared so."""
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        log.error(
            "%sengine call for %d request(s), %d reviews failed: %s",
            what,
            len(jobs),
            sum(len(job.texts) for job in jobs),
            self.last_error,
        )
        if isinstance(exc, EngineDeadError) and self.watch is not None and self.watch.in_process:
            self.watch.declare_dead(self.last_error)
        for job in jobs:
            self._fail(job, self.last_error)

    def _score_jobs(self, jobs: list[list[Any]]) -> list[ScoredTexts | Exception]:
        """All the jobs' texts in one call; if it fails, the jobs apart, and a culprit's reviews apart.

        A review is blamed (422) only when the engine is seen to work: other requests of the batch
        or other reviews of its own request scored. Otherwise the failure is the engine's (503).
        """
        check_alive = self.engine.check_alive if self.engine is not None else None
        try:
            found = score_apart(jobs, lambda part: self._score([t for texts in part for t in texts]), check_alive)
        except EngineDeadError:
            raise
        except Exception as exc:  # noqa: BLE001 - nothing scored: the engine's failure, unless one request
            if len(jobs) > 1:
                raise
            found = Isolated([], {0: exc})
        results: list[ScoredTexts | Exception] = [EngineUnavailable("not scored")] * len(jobs)
        for start, stop, scored in found.parts:
            row = 0
            for j in range(start, stop):
                results[j] = ScoredTexts(scored.labels, scored.probs[row : row + len(jobs[j])], scored.stats)
                row += len(jobs[j])
        for j in found.failed:
            try:
                rows = score_apart(jobs[j], self._score, check_alive, engine_works=bool(found.parts))
            except EngineDeadError:
                raise
            except Exception as again:  # noqa: BLE001 - the engine's failure, as far as can be told
                results[j] = EngineUnavailable(f"{type(again).__name__}: {again}")
                continue
            if rows.failed:
                results[j] = UnscorableReviews({i: f"{type(e).__name__}: {e}" for i, e in rows.failed.items()})
            else:  # it failed in company but not alone: its parts are its answer
                first = rows.parts[0][2]
                results[j] = ScoredTexts(first.labels, np.concatenate([s.probs for _, _, s in rows.parts]), first.stats)
        return results

    def _aspect_jobs(self, jobs: list[tuple[list[Any], tuple[Aspect, ...]]]) -> list[ScoredAspects | Exception]:
        """One ``score_aspects`` call per distinct aspect set; a set that fails is asked per request,
        so a request's failure is its own: 503 when its call fails, 422 naming the reviews that
        fail alone (``score_aspects`` isolates them)."""
        results: list[ScoredAspects | Exception] = [EngineUnavailable("not scored")] * len(jobs)
        sets: dict[tuple[Aspect, ...], list[int]] = {}
        for j, (_, aspects) in enumerate(jobs):
            sets.setdefault(aspects, []).append(j)
        for aspects, members in sets.items():
            for part in [members] if len(members) == 1 else [members, *([j] for j in members)]:
                try:
                    found = self._aspects([t for j in part for t in jobs[j][0]], aspects)
                except EngineDeadError:
                    raise
                except Exception as exc:  # noqa: BLE001 - alone: the engine's failure, as far as can be told
                    if len(part) == 1:
                        results[part[0]] = EngineUnavailable(f"aspects: {type(exc).__name__}: {exc}")
                    continue
                row = 0
                for j in part:
                    n = len(jobs[j][0])
                    errors = {r - row: f"aspects: {e}" for r, e in found.errors.items() if row <= r < row + n}
                    results[j] = (
                        UnscorableReviews(errors)
                        if errors
                        else ScoredAspects(
                            found.aspects,
                            found.labels[row : row + n],
                            found.scores[row : row + n],
                            found.stats,
                            mention=found.mention,
                        )
                    )
                    row += n
                if len(part) > 1:
                    break  # the set in company worked: no need to ask apart
        return results

    def _aspects(self, texts: list[Any], aspects: tuple[Aspect, ...]) -> ScoredAspects:
        def ask() -> ScoredAspects:
            return score_aspects(texts, self.engine, aspects=aspects, mention=self.mention, cache=self.cache)

        if self.watch is None:
            return ask()
        # A question costs at most a review's forward pass (its review's tokens are cached after the first).
        with self.watch.engine_call(len(texts) * len(aspects)):
            return ask()

    def _score(self, texts: list[Any]) -> ScoredTexts:
        if self.watch is None:
            return score_texts(
                texts, self.engine, labels=self.labels, prompt=self.prompt, cache=self.cache, progress=False
            )
        with self.watch.engine_call(len(texts)):
            return score_texts(
                texts, self.engine, labels=self.labels, prompt=self.prompt, cache=self.cache, progress=False
            )
