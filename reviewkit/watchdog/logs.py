"""The watchdog's log: the seed's line format, on stderr and optionally a file.

Its own module so that the watch (:mod:`.cli`) and the scheduled commands
(:mod:`.commands`) share it without importing each other.
"""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s - %(levelname)s - %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def setup_logging(log_file: str | None = None) -> logging.Logger:
    """The watchdog's own logger in the seed's format (the SDK touches the root logger)."""
    log = logging.getLogger("reviewkit.watchdog")
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
    formatter = logging.Formatter(LOG_FORMAT, DATE_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        log.addHandler(handler)
    return log
