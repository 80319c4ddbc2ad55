"""Dollars from throughput: a pod's hour, a serverless endpoint's second, the watchdog's savings.

Pure Python (no numpy, no pandas), so the CLI, the notebooks and the tests share it at
no import cost. Prices are US dollars, durations seconds unless a name says hours.

The two ways of serving the same model, as the seed's guide compared them:

* **Pod + vLLM**: billed by the hour while it runs, whether busy or idle; the model
  is loaded once per pod start (``pod_load_seconds``), then every review costs only
  its share of the engine's time.
* **Serverless endpoint**: billed by the second of worker time per request; a
  request that finds no warm worker pays a cold start (the model load), and every
  request pays a network round trip in latency (not billed).

    from reviewkit import cost
    figures = cost.ServingFigures(pod_price_per_hour=0.5)     # any field is editable
    cost.compare(10_000, reviews_per_s=50.0, figures=figures)
    cost.break_even_reviews(50.0, figures)                     # above this, the pod is cheaper
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_FIGURES",
    "Estimate",
    "ServingFigures",
    "WatchdogSavings",
    "break_even_reviews",
    "break_even_reviews_per_hour",
    "compare",
    "cost_per_1000_reviews",
    "pod_estimate",
    "savings_from_simulation",
    "serverless_cost_per_1000_reviews",
    "serverless_cost_per_request",
    "serverless_estimate",
    "watchdog_savings",
]

#: Per-second serverless prices from RunPod's public comparison (flex workers).
SERVERLESS_24GB_PER_SECOND = 0.00019
SERVERLESS_A100_PER_SECOND = 0.00076


def _non_negative(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or math.isnan(value) or value < 0 or math.isinf(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _rate(reviews_per_s: float) -> float:
    if not isinstance(reviews_per_s, (int, float)) or not reviews_per_s > 0 or math.isinf(reviews_per_s):
        raise ValueError(f"reviews_per_s must be a positive number, got {reviews_per_s!r}")
    return float(reviews_per_s)


@dataclass(frozen=True)
class ServingFigures:
    """Editable assumptions; the defaults are the seed guide's figures (its ranges in comments)."""

    pod_price_per_hour: float = 0.69                           # seed: $0.5-1.0 per GPU-hour
    pod_load_seconds: float = 90.0                             # seed: model load took 1-2 min
    serverless_price_per_second: float = SERVERLESS_24GB_PER_SECOND  # A100: 0.00076
    serverless_cold_start_seconds: float = 90.0                # a cold worker loads the model too
    cold_start_share: float = 0.05                             # requests that find no warm worker
    network_overhead_seconds: float = 0.15                     # seed: 100-200 ms per request
    reviews_per_request: int = 10                              # one restaurant's reviews per call

    def __post_init__(self) -> None:
        for name in ("pod_price_per_hour", "pod_load_seconds", "serverless_price_per_second",
                     "serverless_cold_start_seconds", "network_overhead_seconds"):
            _non_negative(name, getattr(self, name))
        if not 0.0 <= self.cold_start_share <= 1.0:
            raise ValueError(f"cold_start_share must be within [0, 1], got {self.cold_start_share!r}")
        if not isinstance(self.reviews_per_request, int) or self.reviews_per_request < 1:
            raise ValueError(f"reviews_per_request must be a positive integer, got {self.reviews_per_request!r}")


DEFAULT_FIGURES = ServingFigures()


@dataclass(frozen=True)
class Estimate:
    """What serving ``reviews`` one way costs: dollars, billed seconds, and wall time."""

    option: str            # "pod" or "serverless"
    reviews: float
    dollars: float
    billed_seconds: float
    wall_seconds: float

    @property
    def dollars_per_1000_reviews(self) -> float:
        return self.dollars / self.reviews * 1000.0 if self.reviews else float("nan")


def cost_per_1000_reviews(price_per_hour: float, reviews_per_s: float) -> float:
    """$ per 1,000 reviews on a pod billed ``price_per_hour`` running at ``reviews_per_s``."""
    if price_per_hour < 0:
        raise ValueError(f"price_per_hour must be >= 0, got {price_per_hour!r}")
    if not reviews_per_s > 0 or math.isinf(reviews_per_s):
        raise ValueError(f"reviews_per_s must be a positive number, got {reviews_per_s!r}")
    return price_per_hour / 3600.0 / reviews_per_s * 1000.0


def _serverless_seconds_per_review(reviews_per_s: float, figures: ServingFigures) -> float:
    """Billed worker seconds per review: its processing plus its share of cold starts."""
    cold = figures.cold_start_share * figures.serverless_cold_start_seconds / figures.reviews_per_request
    return 1.0 / _rate(reviews_per_s) + cold


def serverless_cost_per_1000_reviews(reviews_per_s: float, figures: ServingFigures = DEFAULT_FIGURES) -> float:
    """$ per 1,000 reviews on a serverless endpoint (cold starts averaged in)."""
    return figures.serverless_price_per_second * _serverless_seconds_per_review(reviews_per_s, figures) * 1000.0


def serverless_cost_per_request(reviews_per_s: float, figures: ServingFigures = DEFAULT_FIGURES) -> float:
    """$ per request of ``reviews_per_request`` reviews (the seed quoted $0.001-0.01)."""
    return (figures.serverless_price_per_second * figures.reviews_per_request
            * _serverless_seconds_per_review(reviews_per_s, figures))


def pod_estimate(reviews: float, reviews_per_s: float, figures: ServingFigures = DEFAULT_FIGURES, *,
                 starts: int = 1, idle_seconds: float = 0.0) -> Estimate:
    """A pod started ``starts`` times for the job, plus any ``idle_seconds`` left running.

    Billed: every model load, the processing, and the idle time; the wall time has no idle.
    """
    _non_negative("reviews", reviews)
    _non_negative("idle_seconds", idle_seconds)
    if not isinstance(starts, int) or starts < 0:
        raise ValueError(f"starts must be a non-negative integer, got {starts!r}")
    wall = starts * figures.pod_load_seconds + reviews / _rate(reviews_per_s)
    billed = wall + idle_seconds
    return Estimate("pod", reviews, figures.pod_price_per_hour / 3600.0 * billed, billed, wall)


def serverless_estimate(reviews: float, reviews_per_s: float,
                        figures: ServingFigures = DEFAULT_FIGURES) -> Estimate:
    """The same reviews sent to a serverless endpoint, ``reviews_per_request`` per call.

    Requests are counted on average (``reviews / reviews_per_request``), so cost is
    linear in volume; requests run one after another for the wall time.
    """
    _non_negative("reviews", reviews)
    billed = reviews * _serverless_seconds_per_review(reviews_per_s, figures)
    wall = billed + reviews / figures.reviews_per_request * figures.network_overhead_seconds
    return Estimate("serverless", reviews, figures.serverless_price_per_second * billed, billed, wall)


def compare(reviews: float, reviews_per_s: float,
            figures: ServingFigures = DEFAULT_FIGURES) -> dict[str, Estimate]:
    """``{"pod": ..., "serverless": ...}`` for one batch (the pod started once for it)."""
    return {"pod": pod_estimate(reviews, reviews_per_s, figures),
            "serverless": serverless_estimate(reviews, reviews_per_s, figures)}


def break_even_reviews(reviews_per_s: float, figures: ServingFigures = DEFAULT_FIGURES) -> float:
    """Batch size above which a pod started for the batch is cheaper than serverless.

    The pod pays its model load once and then ``pod_price_per_hour`` per engine second;
    serverless pays ``serverless_price_per_second`` per engine second plus cold starts.
    ``0.0`` if the pod is never dearer, ``inf`` if serverless is always cheaper.
    """
    pod_per_s = figures.pod_price_per_hour / 3600.0
    fixed = pod_per_s * figures.pod_load_seconds
    margin = (figures.serverless_price_per_second * _serverless_seconds_per_review(reviews_per_s, figures)
              - pod_per_s / _rate(reviews_per_s))
    if fixed == 0.0:
        return 0.0 if margin >= 0 else math.inf
    return fixed / margin if margin > 0 else math.inf


def break_even_reviews_per_hour(reviews_per_s: float, figures: ServingFigures = DEFAULT_FIGURES) -> float:
    """Steady volume (reviews/hour) above which an always-on pod beats serverless.

    Compare with the pod's capacity, ``3600 * reviews_per_s``: a break-even above it
    means one pod cannot reach the volume where it pays off.
    """
    per_review = figures.serverless_price_per_second * _serverless_seconds_per_review(reviews_per_s, figures)
    return figures.pod_price_per_hour / per_review if per_review > 0 else math.inf


@dataclass(frozen=True)
class WatchdogSavings:
    """Idle time a pod bills with the watchdog, against a pod nobody stops."""

    billed_idle_seconds: float
    unwatched_idle_seconds: float
    price_per_hour: float

    @property
    def billed_idle_hours(self) -> float:
        return self.billed_idle_seconds / 3600.0

    @property
    def saved_idle_hours(self) -> float:
        return max(0.0, self.unwatched_idle_seconds - self.billed_idle_seconds) / 3600.0

    @property
    def billed_dollars(self) -> float:
        """$ paid for idle time despite the watchdog."""
        return self.billed_idle_hours * self.price_per_hour

    @property
    def saved_dollars(self) -> float:
        """$ of idle time the watchdog did not let the pod bill."""
        return self.saved_idle_hours * self.price_per_hour


def watchdog_savings(billed_idle_seconds: float, unwatched_idle_seconds: float,
                     price_per_hour: float = DEFAULT_FIGURES.pod_price_per_hour) -> WatchdogSavings:
    """Billed and saved idle hours and dollars, from a simulation's idle seconds."""
    _non_negative("billed_idle_seconds", billed_idle_seconds)
    _non_negative("unwatched_idle_seconds", unwatched_idle_seconds)
    _non_negative("price_per_hour", price_per_hour)
    if billed_idle_seconds > unwatched_idle_seconds:
        raise ValueError(f"billed idle ({billed_idle_seconds!r} s) exceeds the unwatched idle "
                         f"({unwatched_idle_seconds!r} s): the watchdog cannot add idle time")
    return WatchdogSavings(float(billed_idle_seconds), float(unwatched_idle_seconds), float(price_per_hour))


def savings_from_simulation(result: Any,
                            price_per_hour: float = DEFAULT_FIGURES.pod_price_per_hour) -> WatchdogSavings:
    """:func:`watchdog_savings` of a ``reviewkit.watchdog.simulate`` result."""
    return watchdog_savings(result.idle_seconds_billed, result.idle_seconds_unwatched, price_per_hour)
