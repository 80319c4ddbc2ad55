"""vLLM's own output while it loads: hidden by default, errors always shown.

A load's only output is reviewkit's status line (:mod:`reviewkit.loadstatus`), unless the user
asks for vLLM's log by setting ``VLLM_LOGGING_LEVEL`` (or ``VLLM_LOGGING_CONFIG_PATH``,
``VLLM_CONFIGURE_LOGGING=0``, or ``log_level=``/``logging_config=`` in ``load()``): then
reviewkit leaves vLLM's output exactly as vLLM makes it.

What a load prints otherwise, and the switch that hides each (the libraries' own, where one
exists); errors pass every one of them:

- vLLM's log records in every process: ``log_level="ERROR"`` (vLLM hands its logging
  config to the engine process and its workers), written to stderr
  (``VLLM_LOGGING_STREAM``, vLLM's default is stdout), and the ``vllm`` logger at ERROR in
  this process before ``import vllm``, whose import-time records come before vLLM
  configures logging (Python's last-resort handler prints them, in red in Jupyter);
- the weight-loading progress bar: ``use_tqdm_on_load=False``;
- Python warnings: ignored while the engine starts here, and in vLLM's engine processes
  (``PYTHONWARNINGS=ignore`` when spawned, the same filters when forked);
- PyTorch's C++ warnings in the engine processes: ``TORCH_CPP_LOG_LEVEL=ERROR``;
- on vLLM's CPU build, the spawned engine process and its worker log "Triton is installed,
  but doesn't include CPU backend" while importing vLLM, before they configure logging:
  nothing in their environment reaches that record, so their stderr goes through
  :class:`StderrFilter`, which drops exactly that line and passes everything else (and
  keeps the engine process's last exception for the error raised when a load fails).
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import re
import sys
import threading
import warnings
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

#: Engine-process stderr lines known to be benign and printed before vLLM's logging applies.
BENIGN_LINES = frozenset(
    {
        b"Triton is installed, but doesn't include CPU backend. Disabling Triton.",  # vllm/triton_utils/importing.py
    }
)
#: What hides vLLM's output, set for the engine processes unless the user set them.
ENGINE_ENVIRONMENT = {
    "PYTHONWARNINGS": "ignore",
    "TORCH_CPP_LOG_LEVEL": "ERROR",
    "VLLM_LOGGING_STREAM": "ext://sys.stderr",  # errors are what is left: stderr, red in Jupyter
}
_USER_SWITCHES = ("VLLM_LOGGING_LEVEL", "VLLM_LOGGING_CONFIG_PATH")


def wanted(env: Mapping[str, str], llm_kwargs: Mapping[str, Any]) -> bool:
    """Whether the user asked for vLLM's own output (then reviewkit changes none of it)."""
    return (
        any(env.get(name) for name in _USER_SWITCHES)
        or env.get("VLLM_CONFIGURE_LOGGING", "1") == "0"
        or "log_level" in llm_kwargs
        or "logging_config" in llm_kwargs
    )


def quiet_defaults(llm_kwargs: dict[str, Any]) -> None:
    """vLLM's switches for a quiet load; call before ``import vllm``."""
    llm_kwargs["log_level"] = "ERROR"
    llm_kwargs.setdefault("use_tqdm_on_load", False)
    vllm_logger = logging.getLogger("vllm")
    if vllm_logger.level == logging.NOTSET:  # nobody configured it yet: vLLM's import-time records
        vllm_logger.setLevel(logging.ERROR)


def engine_environment(env: Mapping[str, str]) -> dict[str, str]:
    """Variables to set while vLLM starts: its engine process inherits them, and vLLM
    configures this process's logging then (``VLLM_LOGGING_STREAM``)."""
    return {name: value for name, value in ENGINE_ENVIRONMENT.items() if not env.get(name)}


@contextlib.contextmanager
def warnings_ignored() -> Iterator[None]:
    """Python warnings are hidden while the engine starts, and for good in processes forked meanwhile."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class StderrFilter:
    """Give processes started meanwhile a stderr that drops :data:`BENIGN_LINES` and passes the rest.

    Inside ``with``, file descriptor 2 is a pipe, and processes started then (vLLM's engine
    process, and its worker through it) keep it for life; this process gets its own stderr
    back on exit. A thread copies the pipe, line by line (a partial line that cannot become a
    dropped one at once), until every writer has exited, to this process's ``sys.stderr``
    where that is not file descriptor 2 (Jupyter's stream, so that the lines reach the cell
    before an error that follows them), else to the original descriptor. It keeps the last
    lines it passed on, for :meth:`last_error`. Anything that fails here leaves stderr as it was.
    """

    def __init__(self, drop: frozenset[bytes] = BENIGN_LINES) -> None:
        self.drop = drop
        self.lines: deque[str] = deque(maxlen=200)  # the last lines passed on
        self._thread: threading.Thread | None = None
        self._saved: int | None = None

    def __enter__(self) -> StderrFilter:
        stream = sys.stderr
        try:
            # Started now, multiprocessing's resource tracker would keep the pipe open for good.
            from multiprocessing import resource_tracker

            resource_tracker.ensure_running()
            target = os.dup(2) if stream is None or _fileno(stream) == 2 else stream
            saved = os.dup(2)
            read_end, write_end = os.pipe()
        except OSError:
            return self
        os.dup2(write_end, 2)
        os.close(write_end)
        self._saved = saved
        self._thread = threading.Thread(
            target=self._copy, args=(read_end, target), daemon=True, name="reviewkit-vllm-stderr"
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._saved is not None:
            os.dup2(self._saved, 2)  # this process's stderr again; only the engine processes hold the pipe
            os.close(self._saved)
            self._saved = None

    def wait(self, timeout: float) -> bool:
        """Wait until every process holding the pipe has exited and its output is copied."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def last_error(self) -> str | None:
        """The last Python exception the engine processes printed (``ValueError: ...`` and
        the lines after it: the rest of a message that spans lines), or None."""
        lines = [_LOG_PREFIX.sub("", _ANSI.sub("", line)).rstrip() for line in self.lines]
        starts = [i for i, line in enumerate(lines) if _EXCEPTION_LINE.match(line)]
        if not starts:
            return None
        return "\n".join(line for line in lines[starts[-1] : starts[-1] + 10] if line.strip())

    def _copy(self, read_end: int, target: int | TextIO) -> None:
        decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        pending = b""
        try:
            while chunk := os.read(read_end, 65536):
                *lines, pending = (pending + chunk).split(b"\n")
                kept = [line + b"\n" for line in lines if line.strip() not in self.drop]
                if pending and not any(d.startswith(pending.lstrip()) for d in self.drop):
                    kept.append(pending)
                    pending = b""
                self._write(target, decode(b"".join(kept)))
            self._write(target, decode(pending, final=True))
        finally:
            os.close(read_end)
            if isinstance(target, int):
                os.close(target)

    def _write(self, target: int | TextIO, text: str) -> None:
        if not text:
            return
        self.lines.extend(text.splitlines())
        try:
            if isinstance(target, int):
                data = text.encode()
                while data:
                    data = data[os.write(target, data) :]
            else:
                target.write(text)
                target.flush()
        except (OSError, ValueError):  # stderr went away: keep draining so the engine processes never block
            pass


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError and a ValueError
        return None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOG_PREFIX = re.compile(r"^\([\w:.-]+ pid=\d+\) [A-Z]+ \d\d-\d\d [\d:]+ \[[^\]]*\] ")  # vLLM's log format
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b(?::.*)?$")
