"""Run an app under uvicorn: SIGTERM drains and exits 0, always within the graceful timeout; a dead
engine exits 3.

uvicorn stops accepting connections on SIGTERM, waits for the requests in flight to
be answered (here for at most :attr:`Limits.drain_s`, then it cancels them), runs the
app's shutdown, then raises the signal again so the process dies "by SIGTERM". A drained
server has done nothing wrong, so here the repeated signal meets a handler that ignores
it and :func:`run` returns 0.

What uvicorn cannot bound is a stuck engine: a thread blocked in vLLM forever, an engine
that takes minutes to shut down. So a SIGTERM also starts a timer: if the process is still
alive ``graceful_timeout_s`` later, the engine's processes are killed and the process exits
with status 1. When the app declares its in-process engine dead (:mod:`.liveness`), the
server keeps answering for :data:`DEAD_LINGER_S` (``/health`` reads 503 ``engine_dead``,
every request 503), then stops the same way and exits with status 3, for a supervisor
(systemd, Docker, RunPod's restart policy) to start a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any

import uvicorn

from reviewkit.serve.limits import Limits

log = logging.getLogger("reviewkit.serve")

#: Seconds a server whose engine died keeps answering (503, /health engine_dead) before it stops.
DEAD_LINGER_S = 3.0
#: The exit status when the graceful timeout ran out before the process could end by itself.
EXIT_FORCED = 1


def run(application: Any, host: str = "127.0.0.1", port: int = 8000, *, graceful_timeout_s: float | None = None) -> int:
    """Serve ``application`` until SIGTERM/SIGINT; return 0 after a clean drain, 3 if the engine died.

    ``graceful_timeout_s`` (default: the app's :class:`Limits`, 30 s) bounds a SIGTERM'd process's life.
    """
    state = _state(application)
    limits = state.limits if state is not None else Limits()
    if graceful_timeout_s is not None:
        limits = Limits(**{**vars(limits), "graceful_timeout_s": graceful_timeout_s})
    server = BoundedServer(_config(application, host, port, limits), state, limits.graceful_timeout_s)
    if state is not None:
        state.request_exit = server.exit_for_restart
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _drained) if main else None
    try:
        server.run()
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    if not server.started:
        return 1
    log.info("server stopped: %d request(s) served", state.activity.served if state is not None else 0)
    return state.exit_code if state is not None else 0


def _state(application: Any) -> Any:
    return getattr(getattr(application, "state", None), "reviewkit", None)


class _RefusalsLogged(logging.Filter):
    """uvicorn logs each request it refuses past ``--max-connections``: under a flood, one line per
    refusal would drown the log. One line per ``every_s`` seconds, with the count, is kept."""

    def __init__(self, every_s: float = 10.0) -> None:
        super().__init__()
        self.every_s, self.last, self.hidden = every_s, float("-inf"), 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "Exceeded concurrency limit.":
            return True
        now = time.monotonic()
        if now - self.last < self.every_s:
            self.hidden += 1
            return False
        if self.hidden:
            record.msg, record.args = "Exceeded concurrency limit (%d more since the last line).", (self.hidden,)
        self.last, self.hidden = now, 0
        return True


def _config(application: Any, host: str, port: int, limits: Limits) -> uvicorn.Config:
    errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _RefusalsLogged) for f in errors.filters):
        errors.addFilter(_RefusalsLogged())
    # log_config=None: keep the caller's logging (the seed's format); access_log off: the
    # app logs one line per request itself, with counts, and never the headers.
    return uvicorn.Config(
        application,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=limits.drain_s,
        limit_concurrency=limits.max_connections,
    )


class ThreadServer:
    """``application`` under uvicorn in a daemon thread of this process (a notebook, a benchmark, a test).

    No signal handling and no exit on a dead engine (the process is not the server's):
    ``with ThreadServer(app, port) as server: ...`` stops it at the end of the block.
    """

    def __init__(self, application: Any, port: int, host: str = "127.0.0.1") -> None:
        state = _state(application)
        self.server = uvicorn.Server(_config(application, host, port, state.limits if state else Limits()))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="reviewkit-serve")
        self.url = f"http://{host}:{port}"

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server did not start (see its log)")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(60)


class BoundedServer(uvicorn.Server):
    """uvicorn's server, whose stop is bounded in time whatever the engine does."""

    def __init__(self, config: uvicorn.Config, state: Any, graceful_timeout_s: float) -> None:
        super().__init__(config)
        self.state = state
        self.graceful_timeout_s = graceful_timeout_s

    def handle_exit(self, sig: int, frame: Any) -> None:
        if sig == signal.SIGTERM and not self.should_exit:
            _exit_later(self.state, self.graceful_timeout_s, EXIT_FORCED, "SIGTERM")
            if self.state is not None:  # just before uvicorn cancels them, answer what still waits: 503
                drain_s = self.config.timeout_graceful_shutdown or 0
                with contextlib.suppress(RuntimeError):
                    asyncio.get_running_loop().call_later(
                        max(0.0, drain_s - 0.5), self.state.batcher.fail_all, "the server is stopping"
                    )
        super().handle_exit(sig, frame)

    def exit_for_restart(self, code: int) -> None:
        """Stop after :data:`DEAD_LINGER_S` and exit with ``code`` (called on the event loop)."""
        _exit_later(self.state, DEAD_LINGER_S + self.graceful_timeout_s, code, "the engine's death")
        try:
            asyncio.get_running_loop().call_later(DEAD_LINGER_S, setattr, self, "should_exit", True)
        except RuntimeError:  # not on the loop: stop at its next tick
            self.should_exit = True


def _exit_later(state: Any, seconds: float, code: int, why: str) -> None:
    """In ``seconds``, if the process still lives: kill the engine's processes and exit with ``code``."""

    def hard_exit() -> None:
        log.error(
            "the server did not stop within %g s of %s: killing the engine's processes and exiting with status %d",
            seconds,
            why,
            code,
        )
        watch = getattr(state, "watch", None)
        if watch is not None:
            watch.kill_engine_processes()
        logging.shutdown()
        os._exit(code)

    timer = threading.Timer(seconds, hard_exit)
    timer.daemon = True
    timer.start()


def _drained(signum: int, frame: Any) -> None:
    """uvicorn's re-raised SIGTERM after the drain: nothing left to do."""
