"""Run an app under uvicorn; SIGTERM drains the requests in flight and exits 0.

uvicorn stops accepting connections on SIGTERM, waits for the requests in flight to
be answered, runs the app's shutdown, then raises the signal again so the process
dies "by SIGTERM". A drained server has done nothing wrong, so here the repeated
signal meets a handler that ignores it and :func:`run` returns normally.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

log = logging.getLogger("reviewkit.serve")


def run(application: Any, host: str = "127.0.0.1", port: int = 8000, *,
        graceful_timeout_s: float | None = None) -> int:
    """Serve ``application`` until SIGTERM/SIGINT; return 0 after a clean drain.

    ``graceful_timeout_s`` bounds the wait for requests in flight (None: wait for all).
    """
    import uvicorn

    # log_config=None: keep the caller's logging (the seed's format); access_log off: the
    # app logs one line per request itself, with counts, and never the headers.
    config = uvicorn.Config(application, host=host, port=port, log_config=None, access_log=False,
                            lifespan="on", timeout_graceful_shutdown=graceful_timeout_s)
    server = uvicorn.Server(config)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _drained) if main else None
    try:
        server.run()
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    if not server.started:
        return 1
    log.info("server stopped: %d request(s) served", _served(application))
    return 0


def _drained(signum: int, frame: Any) -> None:
    """uvicorn's re-raised SIGTERM after the drain: nothing left to do."""


def _served(application: Any) -> int:
    state = getattr(getattr(application, "state", None), "reviewkit", None)
    return state.activity.served if state is not None else 0
