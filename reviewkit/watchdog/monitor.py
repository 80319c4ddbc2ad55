"""One watchdog check: read the signals, advance the policy, act, log, save state.

The loop, cron mode and ``--simulate`` differ only in where ``now`` comes from
(wall clock or trace time) and how often :meth:`Monitor.check` is called; the
decision and its logging live here once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from reviewkit.watchdog.action import ApiError, RunPodClient
from reviewkit.watchdog.policy import Decision, IdlePolicy, Step, backoff_delay, step
from reviewkit.watchdog.signals import BUSY, UNKNOWN, Reading, Signal, format_percentages
from reviewkit.watchdog.simulate import TimelineRow
from reviewkit.watchdog.state import WatchdogState, save_state
from reviewkit.watchdog.trace import TraceEnded, TraceReader

#: A pod-status answer younger than this is reused (extrapolated) for the uptime.
STATUS_MAX_AGE = 300.0

# What happened to the pod at a check.
STOPPED = "stopped"
WOULD_STOP = "would-stop"
FAILED = "failed"
BACKOFF = "backoff"


def seconds(value: float) -> str:
    """``60s``, ``0.5s``: whole seconds unless the value is small."""
    if value >= 10:
        return f"{value:.0f}s"
    return f"{value:.1f}".rstrip("0").rstrip(".") + "s"


@dataclass(frozen=True)
class CheckResult:
    time: float
    readings: tuple[Reading, ...]
    step: Step
    runtime: float | None
    outcome: str | None = None

    @property
    def final(self) -> bool:
        """The pod is gone (or would be, in a dry run): the watchdog is done."""
        return self.outcome in (STOPPED, WOULD_STOP)

    def timeline_row(self) -> TimelineRow:
        gpu = next((r for r in self.readings if r.name == "gpu"), None)
        values = gpu.values if gpu is not None else ()
        return TimelineRow(self.time, values, self.step.verdict, self.step.idle_count, self.step.decision)


class Monitor:
    """Holds the signals, policy, state and (optional) RunPod client of one watchdog."""

    def __init__(
        self,
        *,
        policy: IdlePolicy,
        signals: Sequence[Signal],
        state: WatchdogState,
        pod_id: str | None,
        client: RunPodClient | None = None,
        action: str = "stop",
        dry_run: bool = False,
        api_uptime: bool = True,
        state_path: Path | None = None,
        time_prefix: bool = False,
        log: logging.Logger | None = None,
        trace: TraceReader | None = None,
    ) -> None:
        self.policy = policy
        self.signals = list(signals)
        self.state = state
        self.pod_id = pod_id
        self.client = client
        self.action = action
        self.dry_run = dry_run
        self.api_uptime = api_uptime and client is not None
        self.state_path = state_path
        self.time_prefix = time_prefix
        self.log = log or logging.getLogger("reviewkit.watchdog")
        self.trace = trace  # its position is saved so cron runs walk a trace too

    # -- helpers ---------------------------------------------------------------
    def _p(self, now: float) -> str:
        return f"[t={now:g}s] " if self.time_prefix else ""

    def runtime(self, now: float) -> float:
        """Pod uptime from the RunPod API when it answers, else since first start."""
        if self.api_uptime and self.client is not None:
            try:
                uptime = self.client.pod_status(max_age=STATUS_MAX_AGE).uptime_now()
            except ApiError as exc:
                self.log.warning("%sPod uptime unavailable (%s); using time since the watchdog's first start", self._p(now), exc)
            else:
                if uptime is not None:
                    return uptime
                self.log.warning("%sRunPod reports no uptime; using time since the watchdog's first start", self._p(now))
        first = self.state.first_start if self.state.first_start is not None else now
        return max(0.0, now - first)

    def save(self) -> None:
        if self.state_path is not None:
            try:
                save_state(self.state_path, self.state)
            except OSError as exc:
                self.log.warning("Cannot write state file %s: %s", self.state_path, exc)

    # -- the check -------------------------------------------------------------
    def check(self, now: float, wall_now: float) -> CheckResult:
        """One check at ``now`` (policy clock); ``wall_now`` dates external signals."""
        p = self._p(now)
        st = self.state
        since = st.last_wall_check if st.last_wall_check is not None else wall_now - self.policy.check_interval
        if st.first_start is None:
            st.first_start = now
        readings = tuple(self._read(signal, since) for signal in self.signals)
        if self.trace is not None:
            st.trace_row = self.trace.position
        self._log_readings(p, readings)

        runtimes: list[float] = []

        def runtime() -> float:
            runtimes.append(self.runtime(now))
            return runtimes[-1]

        previous = st.idle_count
        outcome_step = step(self.policy, previous, readings, runtime)
        st.idle_count = outcome_step.idle_count
        st.last_check, st.last_wall_check = now, wall_now
        st.checks += 1
        limit = self.policy.idle_limit
        reasons = "; ".join(outcome_step.reasons)
        outcome = None
        decision = outcome_step.decision
        if decision == Decision.BUSY:
            st.stop_failures, st.next_attempt = 0, 0.0
            busy = ", ".join(r.name for r in readings if r.status == BUSY)
            self.log.info("%sWork detected (%s); idle count reset%s", p, busy,
                          f" from {previous}" if previous else "")
        elif decision == Decision.UNKNOWN:
            self.log.warning("%sSignal unavailable (%s); idle count stays at %d/%d", p, reasons, st.idle_count, limit)
        else:
            self.log.info("%sidle (%d/%d)", p, st.idle_count, limit)
            if decision == Decision.WAIT_RUNTIME:
                self.log.info("%sIdle limit reached, but the pod has run %.0fs of the %gs minimum runtime; not stopping yet",
                              p, runtimes[-1], self.policy.min_runtime)
            elif decision == Decision.STOP:
                outcome = self._stop(now, runtimes[-1] if runtimes else None)
        self.save()
        return CheckResult(now, readings, outcome_step, runtimes[-1] if runtimes else None, outcome)

    @staticmethod
    def _read(signal: Signal, since: float) -> Reading:
        """A signal's reading; a bug in one signal is "unknown", never a crash or idle."""
        try:
            return signal.read(since)
        except TraceEnded:
            raise
        except Exception as exc:  # noqa: BLE001
            return Reading(getattr(signal, "name", "signal"), UNKNOWN, f"{type(exc).__name__}: {exc}")

    def _log_readings(self, p: str, readings: tuple[Reading, ...]) -> None:
        for r in readings:
            if r.name == "gpu":
                if r.status == UNKNOWN:
                    self.log.warning("%sGPU utilization unavailable: %s", p, r.detail)
                else:
                    self.log.info("%sGPU utilization: %s", p, format_percentages(r.values))
            elif r.warn:
                self.log.warning("%s%s: %s", p, r.name, r.detail)
        parts = [f"{r.name}={r.status}" + ("" if r.name == "gpu" or not r.detail else f" ({r.detail})") for r in readings]
        if parts:
            self.log.info("%sSignals: %s", p, ", ".join(parts))

    def _stop(self, now: float, runtime: float | None) -> str:
        p, st = self._p(now), self.state
        verb = "terminate" if self.action == "terminate" else "stop"
        age = f", runtime {runtime:.0f}s" if runtime is not None else ""
        if self.dry_run:
            self.log.info("%sIdle limit reached (%d/%d%s): [dry-run] would %s pod %s",
                          p, st.idle_count, self.policy.idle_limit, age, verb, self.pod_id or "(no pod id)")
            st.stopped_at, st.idle_count = now, 0
            return WOULD_STOP
        if now < st.next_attempt:
            self.log.info("%sIdle limit reached; next %s attempt in %s (backoff after %d failure(s))",
                          p, verb, seconds(st.next_attempt - now), st.stop_failures)
            return BACKOFF
        self.log.info("%sIdle limit reached (%d/%d%s): %s pod %s",
                      p, st.idle_count, self.policy.idle_limit, age, "terminating" if verb == "terminate" else "stopping", self.pod_id)
        assert self.client is not None
        try:
            status = self.client.act(self.action)
        except ApiError as exc:
            st.stop_failures += 1
            delay = backoff_delay(st.stop_failures, self.policy.check_interval)
            st.next_attempt = now + delay
            self.log.error("%sPod %s %s failed (%s); still monitoring, retrying in %s",
                           p, self.pod_id, verb, exc, seconds(delay))
            return FAILED
        self.log.info("%sPod %s %s succeeded (status %s)", p, self.pod_id,
                      "terminate" if verb == "terminate" else "stop", status)
        st.stopped_at, st.idle_count, st.stop_failures, st.next_attempt = now, 0, 0, 0.0
        return STOPPED
