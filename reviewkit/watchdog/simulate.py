"""Replay a utilisation trace through the idle policy, without the CLI or the API.

For notebooks: "with these settings, when would my pod have stopped, and how much
idle time would I still have paid for?"::

    from reviewkit.watchdog.simulate import simulate
    result = simulate("tests/fixtures/traces/notebook_evening.csv", preset="aggressive")
    result.stop_time, result.idle_seconds_billed
    pd.DataFrame(result.records())          # time, utilization, idle_count, decision

The same :func:`reviewkit.watchdog.policy.step` decides here and in the watchdog, and
the CLI's ``--simulate`` prints :meth:`SimulationResult.summary` from the same rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from reviewkit.watchdog.gpu import GpuSignal
from reviewkit.watchdog.policy import Decision, IdlePolicy, step
from reviewkit.watchdog.signals import IDLE
from reviewkit.watchdog.trace import TraceEnded, TraceReader

#: Decision of the rows after the stop, kept so a plot shows the whole trace.
AFTER_STOP = "after-stop"


@dataclass(frozen=True)
class TimelineRow:
    """One check: trace time, per-GPU utilisation, verdict, idle count, decision."""

    time: float
    utilization: tuple[float, ...]
    verdict: str
    idle_count: int
    decision: str


@dataclass
class SimulationResult:
    """Timeline plus the two numbers that matter: when it stops, idle time paid."""

    timeline: list[TimelineRow] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0
    stop_time: float | None = None

    @property
    def idle_seconds_billed(self) -> float:
        """Idle seconds between the start and the stop (or the trace's end)."""
        until = self.stop_time if self.stop_time is not None else self.end
        return idle_seconds(self.timeline, until)

    @property
    def idle_seconds_unwatched(self) -> float:
        """Idle seconds a pod nobody stops would bill until the trace ends."""
        return idle_seconds(self.timeline, self.end)

    def records(self) -> list[dict[str, Any]]:
        """Plain dicts (one per check), e.g. for ``pandas.DataFrame``."""
        return [
            {
                "time": r.time,
                "utilization": max(r.utilization) if r.utilization else None,
                "per_gpu": r.utilization,
                "verdict": r.verdict,
                "idle_count": r.idle_count,
                "decision": r.decision,
            }
            for r in self.timeline
        ]

    def summary(self) -> str:
        billed = self.idle_seconds_billed
        unwatched = self.idle_seconds_unwatched
        if self.stop_time is None:
            return (
                f"Simulation: the pod would not be stopped within the trace "
                f"(t={self.start:g}s to {self.end:g}s); idle seconds billed: {billed:g}"
            )
        offset = self.stop_time - self.start
        return (
            f"Simulation: the pod would stop at t={self.stop_time:g}s "
            f"({timedelta(seconds=round(offset))} after the start); "
            f"idle seconds billed: {billed:g} "
            f"(without the watchdog: {unwatched:g} until the trace ends at t={self.end:g}s)"
        )


def idle_seconds(timeline: list[TimelineRow], until: float) -> float:
    """Sum of the intervals ending in an idle check, up to ``until``.

    Each sample describes the interval since the previous one (NVML reports
    utilisation over its last sample period), so the first row counts nothing.
    """
    total = 0.0
    for previous, row in zip(timeline, timeline[1:], strict=False):
        if row.time > until:
            break
        if row.verdict == IDLE:
            total += row.time - previous.time
    return total


def simulate(
    trace: str | os.PathLike[str] | TraceReader,
    policy: IdlePolicy | None = None,
    *,
    preset: str | None = None,
    idle_threshold: float | None = None,
    idle_limit: int | None = None,
    min_runtime: float | None = None,
) -> SimulationResult:
    """Replay ``trace`` through the policy; runtime is trace time since its first row.

    Settings: ``policy``, else ``preset`` (default ``"default"``), with any explicit
    keyword overriding it, as on the command line.
    """
    base = policy or IdlePolicy.preset(preset or "default")
    policy = IdlePolicy(
        idle_threshold=base.idle_threshold if idle_threshold is None else float(idle_threshold),
        check_interval=base.check_interval,
        idle_limit=base.idle_limit if idle_limit is None else int(idle_limit),
        min_runtime=base.min_runtime if min_runtime is None else float(min_runtime),
    )
    reader = trace if isinstance(trace, TraceReader) else TraceReader(trace)
    gpu = GpuSignal(reader, policy.idle_threshold)
    result = SimulationResult(start=reader.next_time(), end=reader.end_time)
    count = 0
    while True:
        try:
            now = reader.next_time()
        except TraceEnded:
            break
        reading = gpu.read()
        if result.stop_time is not None:
            result.timeline.append(TimelineRow(now, reading.values, reading.status, count, AFTER_STOP))
            continue
        outcome = step(policy, count, [reading], runtime=now - result.start)
        count = outcome.idle_count
        result.timeline.append(TimelineRow(now, reading.values, outcome.verdict, count, outcome.decision))
        if outcome.decision == Decision.STOP:
            result.stop_time = now
    return result
