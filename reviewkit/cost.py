"""Dollars from throughput: a pod's hour, a serverless endpoint's second, the watchdog's savings.

Pure Python (no numpy, no pandas), so the CLI, the notebooks and the tests share it at
no import cost. Prices are US dollars, durations seconds unless a name says hours.

The two ways of serving the same model, as the seed's guide compared them:

* **Pod + vLLM**: billed by the hour while it runs, whether busy or idle; the model
  is loaded once per pod start (``pod_load_seconds``), then every review costs only
  its share of the engine's time.
* **Serverless endpoint** (RunPod): a *flex* worker is billed by the second from the
  moment it is woken until it stops. It works in **bursts**: the first request after
  the worker's idle timeout finds it cold and pays a cold start (container start and
  model load, ``serverless_cold_start_seconds``), the burst's requests then run on the
  warm worker, and after the last one the worker stays up, billed, for its idle timeout
  (``serverless_idle_timeout_seconds``, RunPod's default 5 s) before it stops. So a
  batch sent as one burst costs ``flex price x (cold start + processing + idle tail)``:
  a long batch costs about what a pod costs (the flex/pod price ratio), a lone request
  costs mostly its tail and its cold start. An *active* worker runs all the time at a
  lower per-second price, billed like a pod. Network round trips add latency, not cost.

Until 2026-11-30 this module charged a fixed share (5 %) of 10-review requests a 90 s
cold start, whatever the traffic: a 1,000,000-review batch paid 5,000 cold starts and
came out ~30x dearer than a pod. One batch is one burst; cold starts are per burst.

    from reviewkit import cost
    figures = cost.ServingFigures(pod_price_per_hour=0.5)     # any field is editable
    cost.compare(10_000, reviews_per_s=50.0, figures=figures)
    cost.break_even_reviews(50.0, figures)                     # where the two cost the same
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
    "active_worker_price_per_hour",
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

# RunPod Serverless per-second prices, from https://docs.runpod.io/serverless/pricing
# (read 2026-11-30): flex workers (scale to zero) and active workers (always on).
SERVERLESS_24GB_PER_SECOND = 0.00019  # L4, A5000, 3090: flex
SERVERLESS_24GB_ACTIVE_PER_SECOND = 0.00013  # L4, A5000, 3090: active
SERVERLESS_A100_PER_SECOND = 0.00076  # A100 80 GB: flex
SERVERLESS_A100_ACTIVE_PER_SECOND = 0.00060  # A100 80 GB: active
# The default idle timeout of a RunPod Serverless endpoint, from
# https://docs.runpod.io/serverless/endpoints/endpoint-configurations (read 2026-11-30).
RUNPOD_DEFAULT_IDLE_TIMEOUT_SECONDS = 5.0


def _non_negative(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or math.isnan(value) or value < 0 or math.isinf(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _rate(reviews_per_s: float) -> float:
    if not isinstance(reviews_per_s, (int, float)) or not reviews_per_s > 0 or math.isinf(reviews_per_s):
        raise ValueError(f"reviews_per_s must be a positive number, got {reviews_per_s!r}")
    return float(reviews_per_s)


@dataclass(frozen=True)
class ServingFigures:
    """Editable assumptions: the seed guide's figures and RunPod's published prices (comments)."""

    pod_price_per_hour: float = 0.69  # seed: $0.5-1.0 per GPU-hour
    pod_load_seconds: float = 90.0  # seed: model load took 1-2 min
    serverless_price_per_second: float = SERVERLESS_24GB_PER_SECOND  # flex; A100: 0.00076
    serverless_active_price_per_second: float = SERVERLESS_24GB_ACTIVE_PER_SECOND  # A100: 0.00060
    serverless_cold_start_seconds: float = 90.0  # a cold worker loads the model too
    serverless_idle_timeout_seconds: float = RUNPOD_DEFAULT_IDLE_TIMEOUT_SECONDS  # billed after each burst
    network_overhead_seconds: float = 0.15  # seed: 100-200 ms per request
    reviews_per_request: int = 10  # one restaurant's reviews per call

    def __post_init__(self) -> None:
        for name in (
            "pod_price_per_hour",
            "pod_load_seconds",
            "serverless_price_per_second",
            "serverless_active_price_per_second",
            "serverless_cold_start_seconds",
            "serverless_idle_timeout_seconds",
            "network_overhead_seconds",
        ):
            _non_negative(name, getattr(self, name))
        if not isinstance(self.reviews_per_request, int) or self.reviews_per_request < 1:
            raise ValueError(f"reviews_per_request must be a positive integer, got {self.reviews_per_request!r}")


DEFAULT_FIGURES = ServingFigures()


@dataclass(frozen=True)
class Estimate:
    """What serving ``reviews`` one way costs: dollars, billed seconds, and wall time."""

    option: str  # "pod" or "serverless"
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


def serverless_cost_per_1000_reviews(reviews_per_s: float, figures: ServingFigures = DEFAULT_FIGURES) -> float:
    """$ per 1,000 reviews inside a long burst on a warm flex worker (the burst's cold start
    and idle tail come on top, once per burst: see :func:`serverless_estimate`)."""
    return figures.serverless_price_per_second / _rate(reviews_per_s) * 1000.0


def serverless_cost_per_request(
    reviews_per_s: float, figures: ServingFigures = DEFAULT_FIGURES, *, cold: bool = False
) -> float:
    """$ of a lone request of ``reviews_per_request`` reviews, a burst of its own: its
    processing, the idle tail after it and, if ``cold``, a cold start (the seed quoted
    $0.001-0.01 per request)."""
    seconds = figures.reviews_per_request / _rate(reviews_per_s) + figures.serverless_idle_timeout_seconds
    if cold:
        seconds += figures.serverless_cold_start_seconds
    return figures.serverless_price_per_second * seconds


def active_worker_price_per_hour(figures: ServingFigures = DEFAULT_FIGURES) -> float:
    """$ per hour of an always-on (active) serverless worker: billed like a pod, busy or not."""
    return figures.serverless_active_price_per_second * 3600.0


def pod_estimate(
    reviews: float,
    reviews_per_s: float,
    figures: ServingFigures = DEFAULT_FIGURES,
    *,
    starts: int = 1,
    idle_seconds: float = 0.0,
) -> Estimate:
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


def serverless_estimate(
    reviews: float,
    reviews_per_s: float,
    figures: ServingFigures = DEFAULT_FIGURES,
    *,
    bursts: int = 1,
    cold: bool = True,
) -> Estimate:
    """The same reviews sent to a flex serverless worker in ``bursts`` bursts.

    Each burst pays a cold start (unless ``cold=False``: the worker is still warm from
    earlier traffic) and its idle tail; the processing is the same as on a pod at
    ``reviews_per_s``. The wall time adds a network round trip per request of
    ``reviews_per_request`` reviews (one after another) but not the idle tails.
    """
    _non_negative("reviews", reviews)
    if not isinstance(bursts, int) or bursts < 1:
        raise ValueError(f"bursts must be a positive integer, got {bursts!r}")
    start = figures.serverless_cold_start_seconds if cold else 0.0
    processing = reviews / _rate(reviews_per_s)
    billed = bursts * (start + figures.serverless_idle_timeout_seconds) + processing
    wall = bursts * start + processing + reviews / figures.reviews_per_request * figures.network_overhead_seconds
    return Estimate("serverless", reviews, figures.serverless_price_per_second * billed, billed, wall)


def compare(
    reviews: float,
    reviews_per_s: float,
    figures: ServingFigures = DEFAULT_FIGURES,
    *,
    serverless_reviews_per_s: float | None = None,
) -> dict[str, Estimate]:
    """``{"pod": ..., "serverless": ...}`` for one batch: the pod started once for it, the
    endpoint called in one burst from cold (its own throughput if given, e.g. measured
    through HTTP)."""
    return {
        "pod": pod_estimate(reviews, reviews_per_s, figures),
        "serverless": serverless_estimate(reviews, serverless_reviews_per_s or reviews_per_s, figures),
    }


def break_even_reviews(reviews_per_s: float, figures: ServingFigures = DEFAULT_FIGURES) -> float:
    """Batch size at which a pod started for the batch and one cold serverless burst cost the same.

    Both pay a start once (model load; cold start plus idle tail) and then their price per
    engine second, so the costs cross at most once: ``inf`` if they never do (one option is
    cheaper at every size; :func:`compare` says which), ``0.0`` if they cost the same from
    the start. Below it the option with the smaller start is cheaper, above it the one with
    the smaller price per second.
    """
    pod_per_s = figures.pod_price_per_hour / 3600.0
    fixed = (
        figures.serverless_price_per_second
        * (figures.serverless_cold_start_seconds + figures.serverless_idle_timeout_seconds)
        - pod_per_s * figures.pod_load_seconds
    )
    slope = (pod_per_s - figures.serverless_price_per_second) / _rate(reviews_per_s)
    if fixed == 0.0:
        return 0.0
    crossing = fixed / slope if slope != 0.0 else -1.0
    return crossing if crossing > 0 else math.inf


def break_even_reviews_per_hour(
    reviews_per_s: float, figures: ServingFigures = DEFAULT_FIGURES, *, bursts_per_hour: float = 1.0
) -> float:
    """Steady volume (reviews/hour) above which an always-on pod beats a flex endpoint that
    is called in ``bursts_per_hour`` cold bursts per hour.

    Compare with the pod's capacity, ``3600 * reviews_per_s``: a break-even above it
    means one pod cannot reach the volume where it pays off.
    """
    _non_negative("bursts_per_hour", bursts_per_hour)
    per_review = figures.serverless_price_per_second / _rate(reviews_per_s)
    per_hour_fixed = (
        bursts_per_hour
        * figures.serverless_price_per_second
        * (figures.serverless_cold_start_seconds + figures.serverless_idle_timeout_seconds)
    )
    remaining = figures.pod_price_per_hour - per_hour_fixed
    if remaining <= 0:
        return 0.0
    return remaining / per_review if per_review > 0 else math.inf


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


def watchdog_savings(
    billed_idle_seconds: float,
    unwatched_idle_seconds: float,
    price_per_hour: float = DEFAULT_FIGURES.pod_price_per_hour,
) -> WatchdogSavings:
    """Billed and saved idle hours and dollars, from a simulation's idle seconds."""
    _non_negative("billed_idle_seconds", billed_idle_seconds)
    _non_negative("unwatched_idle_seconds", unwatched_idle_seconds)
    _non_negative("price_per_hour", price_per_hour)
    if billed_idle_seconds > unwatched_idle_seconds:
        raise ValueError(
            f"billed idle ({billed_idle_seconds!r} s) exceeds the unwatched idle "
            f"({unwatched_idle_seconds!r} s): the watchdog cannot add idle time"
        )
    return WatchdogSavings(float(billed_idle_seconds), float(unwatched_idle_seconds), float(price_per_hour))


def savings_from_simulation(result: Any, price_per_hour: float = DEFAULT_FIGURES.pod_price_per_hour) -> WatchdogSavings:
    """:func:`watchdog_savings` of a ``reviewkit.watchdog.simulate`` result."""
    return watchdog_savings(result.idle_seconds_billed, result.idle_seconds_unwatched, price_per_hour)
