"""The server's limits and timeouts: one definition of each (its default, its flag, what it does).

``reviewkit serve``'s flags, ``reviewkit.serve.app(**limits)`` and the README's "Limits and
failure behaviour" table all come from :data:`Limits`' fields, so a limit means the same
everywhere. No FastAPI here: the command line's parser imports this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


def _limit(default: Any, flag: str, help: str, *, minimum: float = 0, optional: bool = False) -> Any:
    return field(default=default, metadata={"flag": flag, "help": help, "minimum": minimum, "optional": optional})


@dataclass(frozen=True)
class Limits:
    """What one request, the queue and the engine may take before the server says no (see README)."""

    max_reviews: int = _limit(
        1000, "--max-reviews", "reviews per request (the batch route: of all its restaurants); more get 413", minimum=1
    )
    max_restaurants: int = _limit(1000, "--max-restaurants", "restaurants per batch request; more get 413", minimum=1)
    max_aspects: int = _limit(
        10, "--max-aspects", "aspects per request (a list in its 'aspects' field); more get 413", minimum=1
    )
    max_body_bytes: int = _limit(1_000_000, "--max-body-bytes", "request body size; larger get 413", minimum=1)
    read_timeout_s: float = _limit(
        30.0,
        "--read-timeout",
        "seconds a request's body may take to arrive after its headers; slower get 408 and the connection is closed",
        minimum=0.001,
    )
    request_timeout_s: float = _limit(
        90.0, "--request-timeout", "seconds from a request's body to its answer; past it 504", minimum=0.001
    )
    max_queue_reviews: int | None = _limit(
        None,
        "--max-queue-reviews",
        "reviews waiting for the engine; a request "
        "that would pass it gets 503 with Retry-After at once (default: what the "
        "engine scores in --queue-wait seconds, measured as it runs, and at least "
        "two engine batches)",
        minimum=1,
        optional=True,
    )
    queue_wait_s: float = _limit(
        60.0, "--queue-wait", "the wait the default --max-queue-reviews is sized for", minimum=0.001
    )
    max_connections: int = _limit(
        128, "--max-connections", "open connections; a request on one more gets uvicorn's 503", minimum=2
    )
    batch_wait_ms: float = _limit(
        5.0, "--batch-wait-ms", "how long a request waits for others to share its engine call"
    )
    max_batch_reviews: int = _limit(1024, "--max-batch-reviews", "reviews gathered into one engine call", minimum=1)
    batch_timeout_s: float = _limit(
        60.0,
        "--batch-timeout",
        "an engine call that takes longer than this plus "
        "--batch-timeout-per-review per review is stuck: its requests get 503 and an "
        "in-process engine is declared dead",
        minimum=0.001,
    )
    batch_timeout_per_review_s: float = _limit(0.2, "--batch-timeout-per-review", "see --batch-timeout")
    liveness_interval_s: float = _limit(
        2.0,
        "--liveness-interval",
        "seconds between checks of the engine's liveness (its processes, its check); /health reads the last one",
        minimum=0.01,
    )
    idle_after_s: float = _limit(10.0, "--idle-after", "/health reads busy until this long after the last request")
    retry_after_s: int = _limit(5, "--retry-after", "the Retry-After (seconds) of a 503 or 504", minimum=1)
    graceful_timeout_s: float = _limit(
        30.0,
        "--graceful-timeout",
        "after SIGTERM, the process is gone within this "
        "many seconds: requests in flight are answered meanwhile (the last "
        "min(10 s, a third) of it is kept for closing the engine)",
        minimum=1,
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata["optional"]:
                continue
            integer = f.type in ("int", "int | None")
            if (
                isinstance(value, bool)
                or not isinstance(value, int if integer else (int, float))
                or not math.isfinite(value)
                or value < f.metadata["minimum"]
            ):
                kind = "an integer" if integer else "a number"
                raise ValueError(f"{f.name} must be {kind} >= {f.metadata['minimum']:g}, got {value!r}")

    def engine_call_deadline_s(self, reviews: int) -> float:
        """How long an engine call of ``reviews`` reviews may take before it counts as stuck."""
        return self.batch_timeout_s + self.batch_timeout_per_review_s * reviews

    @property
    def drain_s(self) -> float:
        """How long SIGTERM waits for requests in flight: the graceful timeout less the engine's share."""
        return self.graceful_timeout_s - min(10.0, self.graceful_timeout_s / 3)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per limit, with its default in the help."""
    for f in dataclasses.fields(Limits):
        integer = f.type in ("int", "int | None")
        default = "" if f.default is None else f" (default {f.default:g})"
        parser.add_argument(
            f.metadata["flag"],
            dest=f.name,
            type=int if integer else float,
            default=None,
            help=f.metadata["help"] + default,
        )


def from_args(args: argparse.Namespace) -> Limits:
    """The limits the flags set (unset flags keep their defaults)."""
    return Limits(**{name: getattr(args, name) for name in Limits.names() if getattr(args, name, None) is not None})
