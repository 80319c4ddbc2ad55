"""A status line while an engine loads, so a notebook does not sit silent for minutes.

Loading runs slow steps that print nothing of their own (vLLM shows only errors unless asked,
see :mod:`reviewkit.engines.vllm_output`): importing vLLM, the one-time conversion of the
embedded model (about a minute), vLLM's start and the warm-up. ``load()`` wraps them in
:func:`shown`, and each step names itself with :func:`step`.

In Jupyter the status is a tqdm widget whose clock ticks every second; in a terminal it is
one line per step on stderr (a ticking ``\\r`` line would collide with vLLM's own log lines).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator

_PREFIX = "reviewkit: "
_READY = "engine ready"
_current: _Status | None = None


class _Status:
    def __init__(self, first: str) -> None:
        from tqdm.auto import tqdm
        from tqdm.autonotebook import tqdm as chosen  # tqdm.notebook's class inside Jupyter
        from tqdm.std import tqdm as terminal

        self.started = time.perf_counter()
        self.bar = None
        if chosen is not terminal:
            self.bar = tqdm(total=None, desc=_PREFIX + first + "...", bar_format="{desc} [{elapsed}]", leave=True)
            self._stop = threading.Event()
            self._ticker = threading.Thread(target=self._tick, name="reviewkit-load-status", daemon=True)
            self._ticker.start()
        else:
            self._line(first + "...")

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self.bar.refresh()

    def _line(self, text: str) -> None:
        print(_PREFIX + text, file=sys.stderr, flush=True)

    def step(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(_PREFIX + text + "...")
        else:
            self._line(text + "...")

    def close(self, text: str) -> None:
        seconds = time.perf_counter() - self.started
        if self.bar is None:
            self._line(f"{text} after {seconds:.1f} s")
            return
        self._stop.set()
        self._ticker.join()
        self.bar.set_description_str(_PREFIX + text + " after", refresh=False)
        if text == _READY:
            self.bar.update(1)  # a full (green) bar rather than an empty one
        self.bar.close()


@contextlib.contextmanager
def shown(first: str = "loading the engine") -> Iterator[None]:
    """Show the status for the duration of a load; it ends saying whether the load worked."""
    global _current
    if _current is not None:  # a load inside a load: one status is enough
        yield
        return
    status = _current = _Status(first)
    ok = False
    try:
        yield
        ok = True
    finally:
        _current = None
        status.close(_READY if ok else "loading failed")


def step(text: str) -> None:
    """Name the step now running (no-op outside :func:`shown`)."""
    status = _current
    if status is not None:
        status.step(text)
