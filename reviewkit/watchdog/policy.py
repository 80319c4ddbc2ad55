"""Idle policy: combine signals, count consecutive idle checks, decide when to stop.

Pure functions over plain values so the CLI, the simulator and a notebook share one
definition of "idle long enough". Nothing here reads clocks, files or the network.

The rules, in order of precedence:

* a **stopped** pod (``--source runpod``) has nothing to stop: the count resets to 0;
* any signal that says **busy** is work: the idle count resets to 0;
* otherwise any signal that says **unknown** (cannot be read) freezes the count:
  a broken signal is never evidence of idleness (the monitor drops a signal that
  stays unknown longer than ``--unknown-grace`` before it gets here);
* otherwise (every signal idle) the count grows by one.

The pod is stopped once the count reaches the idle limit *and* the pod has run for
at least the minimum runtime (and, during peak hours with ``--peak-preset off``, not
at all).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from reviewkit.watchdog.optiontable import PRESETS
from reviewkit.watchdog.signals import BUSY, IDLE, STOPPED, UNKNOWN, Reading

__all__ = [
    "DEFAULTS",
    "PRESETS",
    "Decision",
    "IdlePolicy",
    "Step",
    "backoff_delay",
    "combine",
    "step",
]

DEFAULTS = PRESETS["default"]


@dataclass(frozen=True)
class IdlePolicy:
    """Thresholds of one watchdog run (units: percent, seconds, checks); defaults: the seed's."""

    idle_threshold: float = DEFAULTS["idle_threshold"]
    check_interval: float = DEFAULTS["check_interval"]
    idle_limit: int = int(DEFAULTS["idle_limit"])
    min_runtime: float = DEFAULTS["min_runtime"]

    @classmethod
    def preset(cls, name: str) -> IdlePolicy:
        """The seed's named preset (``aggressive``, ``default``, ``conservative``)."""
        return cls(**PRESETS[name])


class Decision:
    """What one check concluded (string constants, easy to log and to plot)."""

    BUSY = "busy"  # work seen: count reset
    UNKNOWN = "unknown"  # a signal could not be read: count frozen
    IDLE = "idle"  # counting towards the limit
    WAIT_RUNTIME = "wait-min-runtime"  # limit reached, pod younger than the minimum
    STOP = "stop"  # limit reached and minimum runtime met
    HOLD = "peak-hold"  # limit reached during peak hours with --peak-preset off
    STOPPED = "pod-stopped"  # --source runpod: the pod is not running


@dataclass(frozen=True)
class Step:
    """Outcome of one check: the verdict, the new idle count, and the decision."""

    verdict: str
    idle_count: int
    decision: str
    reasons: tuple[str, ...] = ()


def combine(readings: Iterable[Reading]) -> tuple[str, tuple[str, ...]]:
    """Overall verdict of one check and the readings that decided it.

    Stopped beats busy beats unknown beats idle; with no readings at all the
    verdict is unknown (nothing observed is not the same as observed idle).
    """
    readings = list(readings)
    if not readings:
        return UNKNOWN, ("no signals",)
    for status in (STOPPED, BUSY, UNKNOWN):
        hits = tuple(f"{r.name}: {r.detail}" for r in readings if r.status == status)
        if hits:
            return status, hits
    return IDLE, ()


def step(
    policy: IdlePolicy,
    idle_count: int,
    readings: Iterable[Reading],
    runtime: float | Callable[[], float],
    allow_stop: bool = True,
) -> Step:
    """Advance the idle count by one check and decide.

    ``runtime`` is the pod's age in seconds, or a function returning it: the
    function is called only once the idle limit is reached, so a caller that asks
    the RunPod API for the pod's uptime makes no call before then. ``allow_stop``
    False (peak hours with no stopping) holds at the limit.
    """
    verdict, reasons = combine(readings)
    if verdict == STOPPED:
        return Step(verdict, 0, Decision.STOPPED, reasons)
    if verdict == BUSY:
        return Step(verdict, 0, Decision.BUSY, reasons)
    if verdict == UNKNOWN:
        return Step(verdict, idle_count, Decision.UNKNOWN, reasons)
    count = idle_count + 1
    if count < policy.idle_limit:
        return Step(verdict, count, Decision.IDLE, reasons)
    if not allow_stop:
        return Step(verdict, count, Decision.HOLD, reasons)
    age = runtime() if callable(runtime) else runtime
    if not runtime_ok(policy, age):
        return Step(verdict, count, Decision.WAIT_RUNTIME, reasons)
    return Step(verdict, count, Decision.STOP, reasons)


def runtime_ok(policy: IdlePolicy, runtime: float) -> bool:
    """Has the pod run long enough to be stopped?"""
    return runtime >= policy.min_runtime


def backoff_delay(failures: int, interval: float, cap: float = 900.0) -> float:
    """Seconds to wait before retrying a failed stop: interval, 2x, 4x, ... capped.

    A failing API (outage, revoked key) is retried at later checks rather than in a
    tight loop, but never given up on: the whole point is to stop the billing.
    """
    if failures <= 0:
        return 0.0
    # 2.0 ** 60 is far past any cap; the exponent is clamped so that a day-long outage
    # (thousands of failures) cannot overflow a float.
    return min(interval * 2.0 ** min(failures - 1, 60), max(cap, interval))
