"""Gather concurrent requests into one ``score_texts`` call.

An engine scores a batch of 300 reviews in little more time than one review: the
prompts share their prefix in the KV cache and fill the forward pass together. Serving
32 clients one request at a time behind the engine's lock would waste that, so
requests queue here; the collector takes the first, waits a short bounded time
(``wait_s``) for others, and scores all their texts in one call in a worker thread
while new requests queue for the next one. The event loop never blocks on the engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reviewkit.cache import ResultCache
from reviewkit.engines.base import Engine
from reviewkit.prompts import PromptTemplate
from reviewkit.scoring import ScoredTexts, clean_text, score_texts

log = logging.getLogger("reviewkit.serve")


class EngineUnavailable(RuntimeError):
    """No engine, or the engine failed this batch; the request may be retried later."""


@dataclass
class _Job:
    texts: list[Any]
    future: asyncio.Future = field(repr=False)


class Batcher:
    """``await batcher.score(texts)`` from many requests; one engine call per gathered batch."""

    def __init__(self, engine: Engine | None, *, labels: Sequence[str], prompt: PromptTemplate | None = None,
                 cache: bool | ResultCache = True, wait_s: float = 0.005, max_batch_texts: int = 1024) -> None:
        self.engine = engine
        self.labels = tuple(labels)
        self.prompt = prompt
        self.cache = cache
        self.wait_s = wait_s
        self.max_batch_texts = max_batch_texts
        self.batches = 0
        self.last_error: str | None = None
        self._queue: asyncio.Queue[_Job | None] | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the collector on the running loop (the app's lifespan does it)."""
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._collect(), name="reviewkit-batcher")

    async def stop(self) -> None:
        """Finish every queued job, then stop the collector."""
        if self._task is not None and self._queue is not None:
            await self._queue.put(None)
            await self._task
            self._task = None

    async def score(self, texts: list[Any]) -> ScoredTexts:
        """The scores of ``texts`` (any values; see :func:`~reviewkit.scoring.clean_text`), in order.

        Texts without content never reach the engine, so a request of only empty
        reviews is answered without one.
        """
        if all(clean_text(t) is None for t in texts):
            return self._score(texts)
        if self.engine is None:
            raise EngineUnavailable("no engine is loaded")
        if self._queue is None:
            raise EngineUnavailable("the server is not started (its lifespan has not run)")
        job = _Job(list(texts), asyncio.get_running_loop().create_future())
        await self._queue.put(job)
        return await job.future

    def _score(self, texts: list[Any]) -> ScoredTexts:
        return score_texts(texts, self.engine, labels=self.labels, prompt=self.prompt,
                           cache=self.cache, progress=False)

    async def _collect(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            jobs, size = [first], len(first.texts)
            deadline = loop.time() + self.wait_s
            while size < self.max_batch_texts:
                try:
                    job = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                if job is None:
                    stopping = True
                    break
                jobs.append(job)
                size += len(job.texts)
            await self._run(jobs)

    async def _run(self, jobs: list[_Job]) -> None:
        """Score the jobs' texts in one call in a worker thread; hand each job its rows."""
        texts = [t for job in jobs for t in job.texts]
        try:
            scored = await asyncio.to_thread(self._score, texts)
        except Exception as exc:  # noqa: BLE001 - every engine failure goes back to its requests as a 503
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.error("engine call for %d request(s), %d reviews failed: %s", len(jobs), len(texts), self.last_error)
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(EngineUnavailable(self.last_error))
            return
        self.batches += 1
        self.last_error = None
        log.debug("scored %d request(s), %d reviews in one engine call", len(jobs), len(texts))
        start = 0
        for job in jobs:
            end = start + len(job.texts)
            if not job.future.done():  # a client that hung up has a cancelled future
                job.future.set_result(ScoredTexts(scored.labels, scored.probs[start:end], scored.stats))
            start = end
