"""The engine's liveness, watched by one background task; ``/health`` only reads what it found.

Three things are watched, each cheap: the engine's own processes (an in-process vLLM
engine's engine-core process: gone or a zombie is dead), the engine's ``check_alive()``
(every ``liveness_interval_s``, a remote engine's at most every :data:`REMOTE_CHECK_S`, in a
thread of its own, never on a request's path, so ``/health`` costs nothing and never
reaches a remote server, let alone a billed one), and
the engine call in progress, whose deadline grows with its size
(:meth:`Limits.engine_call_deadline_s`): vLLM can block forever once its engine core is
gone or stopped, and nothing else would notice.

An in-process engine that is dead or stuck cannot come back (vLLM does not recover its
engine core), so the watch declares it dead once: ``on_dead`` fails every waiting request
with 503 and asks the process to exit non-zero, for a supervisor to restart it, and what
is left of the engine's processes is killed (a stopped or hung process would hold its
memory, and the pod's bill, forever). A remote engine is not the server's to restart:
a failed check only marks ``/health`` ``engine_error``, and a stuck call fails its own
requests (``on_stuck``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from reviewkit.engines.base import Engine
from reviewkit.serve.limits import Limits

log = logging.getLogger("reviewkit.serve")

#: The exit status of a server whose engine died or hung (a supervisor restarts it).
EXIT_ENGINE_DEAD = 3
#: A pending liveness check older than this (and than five intervals) counts as failed.
CHECK_STALE_S = 10.0
#: A remote engine's check goes over the network (to a server that may bill or wake workers for
#: requests): at most this often, whatever the liveness interval.
REMOTE_CHECK_S = 30.0


class DaemonWorker:
    """One daemon thread running submitted calls in turn: a hung call never holds up the process's exit."""

    def __init__(self, name: str) -> None:
        self._jobs: list[tuple[concurrent.futures.Future, Callable[[], Any]]] = []
        self._ready = threading.Condition()
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._ready:
            self._jobs.append((future, fn))
            self._ready.notify()
        return future

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._jobs:
                    self._ready.wait()
                future, fn = self._jobs.pop(0)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the future
                future.set_exception(exc)


class EngineWatch:
    """Liveness of one engine, for ``/health`` and for the batcher's deadline."""

    def __init__(
        self, engine: Engine, limits: Limits, *, on_dead: Callable[[str], None], on_stuck: Callable[[str], None]
    ) -> None:
        self.engine = engine
        self.limits = limits
        self.on_dead, self.on_stuck = on_dead, on_stuck
        self.in_process = engine.device != "remote"
        self.alive = True
        self.error: str | None = None  # the last failed check (a remote engine's; not fatal)
        self.dead: str | None = None  # why the engine was declared dead (fatal, once)
        self._pids = list(engine.engine_pids()) if self.in_process else []
        self._call: tuple[float, int, int] | None = None  # (monotonic start, reviews, call number)
        self._calls = 0
        self._stuck_call = 0
        self._check: tuple[float, concurrent.futures.Future] | None = None
        self._checked = float("-inf")  # when the last check started
        self._checker = DaemonWorker("reviewkit-liveness")
        self._task: asyncio.Task | None = None

    # -- the batcher's side (its scoring thread) -----------------------------------------

    @contextlib.contextmanager
    def engine_call(self, reviews: int) -> Iterator[None]:
        """Time one engine call against its deadline (thread-safe: a tuple is swapped whole)."""
        self._calls += 1
        self._call = (time.monotonic(), reviews, self._calls)
        try:
            yield
        finally:
            self._call = None

    # -- the background task --------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="reviewkit-liveness")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while self.dead is None:
            self.tick()
            await asyncio.sleep(self.limits.liveness_interval_s)

    def tick(self) -> None:
        """One look at the processes, the call in progress and the last check; start the next check."""
        now = time.monotonic()
        gone = self._gone_process()
        if gone is not None:
            return self.declare_dead(gone)
        call = self._call
        if call is not None and call[2] != self._stuck_call:
            started, reviews, number = call
            deadline = self.limits.engine_call_deadline_s(reviews)
            if now - started > deadline:
                self._stuck_call = number
                reason = (
                    f"an engine call of {reviews} review(s) has run for {now - started:.0f} s, past its "
                    f"deadline of {deadline:.0f} s (--batch-timeout {self.limits.batch_timeout_s:g} + "
                    f"{self.limits.batch_timeout_per_review_s:g} per review): the engine is stuck"
                )
                if self.in_process:
                    return self.declare_dead(reason)
                self._failed(reason)
                self.on_stuck(reason)
        if self._check is not None:
            started, future = self._check
            if future.done():
                self._check = None
                exc = future.exception()
                if exc is None:
                    self.alive, self.error = True, None
                elif self.in_process:
                    return self.declare_dead(f"{type(exc).__name__}: {exc}")
                else:
                    self._failed(f"{type(exc).__name__}: {exc}")
            elif now - started > max(CHECK_STALE_S, 5 * self.limits.liveness_interval_s):
                self._failed(f"the engine's liveness check has not answered for {now - started:.0f} s")
        every = (
            self.limits.liveness_interval_s if self.in_process else max(REMOTE_CHECK_S, self.limits.liveness_interval_s)
        )
        if self._check is None and now - self._checked >= every:
            self._checked = now
            self._check = (now, self._checker.submit(self.engine.check_alive))

    def _failed(self, reason: str) -> None:
        if self.error != reason:
            log.warning("engine check failed: %s", reason)
        self.alive, self.error = False, reason

    def _gone_process(self) -> str | None:
        if not self._pids:
            return None
        import psutil

        for pid in self._pids:
            try:
                if psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                    continue
            except psutil.NoSuchProcess:
                pass
            return f"the engine's process {pid} has exited"
        return None

    def declare_dead(self, reason: str) -> None:
        if self.dead is not None:
            return
        self.dead, self.alive, self.error = reason, False, reason
        log.error(
            "the engine is dead: %s; failing the waiting requests with 503 and exiting with status %d "
            "for a supervisor to restart the server",
            reason,
            EXIT_ENGINE_DEAD,
        )
        self.kill_engine_processes()
        self.on_dead(reason)

    def kill_engine_processes(self) -> None:
        """SIGKILL what is left of the engine's processes (a stopped one too): nothing else frees them."""
        for pid in self._pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
