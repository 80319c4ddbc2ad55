"""One watchdog check: read the signals, advance the policy, act, log, save state.

The loop, cron mode and ``--simulate`` differ only in where ``now`` comes from
(wall clock or trace time) and how often :meth:`Monitor.check` is called; the
decision and its logging live here once.

A signal (or one GPU) unknown for longer than ``unknown_grace`` seconds is dropped
from the vote with an ERROR naming it and the fix, so a broken signal cannot keep
an idle pod billing forever; when no signal is readable at all nothing is stopped
and every check logs an ERROR (``CheckResult.unreadable``; ``--once`` exits 3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from reviewkit.watchdog.action import ApiError, RunPodClient
from reviewkit.watchdog.optiontable import UNKNOWN_GRACE
from reviewkit.watchdog.peak import PeakHours, policy_at
from reviewkit.watchdog.policy import Decision, IdlePolicy, Step, backoff_delay, combine, step
from reviewkit.watchdog.signals import BUSY, IDLE, UNKNOWN, Reading, Signal, format_percentages
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
    unreadable: bool = False  # no signal could be read at all

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
        unknown_grace: float = UNKNOWN_GRACE,
        peak: PeakHours | None = None,
    ) -> None:
        self.base_policy = self.policy = policy
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
        self.unknown_grace = unknown_grace
        self.peak = peak

    # -- helpers ---------------------------------------------------------------
    def _p(self, now: float) -> str:
        return f"[t={now:g}s] " if self.time_prefix else ""

    def runtime(self, now: float) -> float:
        """Pod uptime from the RunPod API when it answers, else since first start."""
        if self.api_uptime and self.client is not None:
            try:
                uptime = self.client.pod_status(max_age=STATUS_MAX_AGE).uptime_now()
            except ApiError as exc:
                self.log.warning(
                    "%sPod uptime unavailable (%s); using time since the watchdog's first start", self._p(now), exc
                )
            else:
                if uptime is not None:
                    return uptime
                self.log.warning(
                    "%sRunPod reports no uptime; using time since the watchdog's first start", self._p(now)
                )
        first = self.state.first_start if self.state.first_start is not None else now
        return max(0.0, now - first)

    def save(self) -> None:
        if self.state_path is not None:
            try:
                save_state(self.state_path, self.state)
            except OSError as exc:
                self.log.warning("Cannot write state file %s: %s", self.state_path, exc)

    def poll(self) -> None:
        """Extra readings between checks, for signals that judge the whole interval (GPU)."""
        for signal in self.signals:
            poll = getattr(signal, "poll", None)
            if poll is not None:
                try:
                    poll()
                except Exception:  # noqa: BLE001 - the check itself reports a broken signal
                    pass

    def _policy(self, now: float, wall_now: float) -> bool:
        """Pick this check's policy (peak hours or not); returns whether a stop is allowed."""
        p, st = self._p(now), self.state
        policy, allow_stop, in_peak = policy_at(self.base_policy, self.peak, wall_now)
        window = self.peak.describe() if in_peak and self.peak is not None else None
        if window != st.peak:
            if window is not None:
                how = (
                    "no stopping"
                    if not allow_stop
                    else f"preset {self.peak.preset if self.peak else ''}: threshold {policy.idle_threshold:g}%, "
                    f"idle limit {policy.idle_limit}, min runtime {policy.min_runtime:g}s"
                )
                self.log.info("%sPeak hours (%s): %s", p, window, how)
            elif st.peak is not None:
                self.log.info(
                    "%sPeak hours (%s) over: idle limit %d, min runtime %gs again",
                    p,
                    st.peak,
                    policy.idle_limit,
                    policy.min_runtime,
                )
        st.peak = window
        self.policy = policy
        for signal in self.signals:
            if hasattr(signal, "threshold"):
                signal.threshold = policy.idle_threshold  # type: ignore[attr-defined]
        return allow_stop

    def _grace(self, p: str, now: float, readings: tuple[Reading, ...]) -> list[Reading]:
        """The readings that vote: a signal (or GPU) unknown for the whole grace is dropped."""
        st = self.state
        current = {key for r in readings for key in r.unknown_keys}
        st.unknown_since = {k: v for k, v in st.unknown_since.items() if k in current}
        for key in current:
            st.unknown_since.setdefault(key, now)
        votes: list[Reading] = []
        for r in readings:
            expired = [k for k in r.unknown_keys if now - st.unknown_since[k] >= self.unknown_grace]
            if r.status != UNKNOWN or not r.unknown_keys or len(expired) < len(r.unknown_keys):
                votes.append(r)
                continue
            fix = next((getattr(s, "fix", "") for s in self.signals if s.name == r.name), "")
            self.log.error(
                "%sSignal %s unknown for %s (more than --unknown-grace %s): dropped from the vote; %s. Fix: %s",
                p,
                ", ".join(expired),
                seconds(now - min(st.unknown_since[k] for k in expired)),
                seconds(self.unknown_grace),
                r.detail,
                fix,
            )
            if r.values:  # the readable GPUs still count
                votes.append(Reading(r.name, IDLE, format_percentages(r.values), r.values))
        return votes

    # -- the check -------------------------------------------------------------
    def check(self, now: float, wall_now: float) -> CheckResult:
        """One check at ``now`` (policy clock); ``wall_now`` dates external signals."""
        p = self._p(now)
        st = self.state
        since = st.last_wall_check if st.last_wall_check is not None else wall_now - self.policy.check_interval
        if st.first_start is None:
            st.first_start = now
        allow_stop = self._policy(now, wall_now)
        readings = tuple(self._read(signal, since) for signal in self.signals)
        if self.trace is not None:
            st.trace_row = self.trace.position
        self._log_readings(p, readings)
        self._note_pod(wall_now)

        runtimes: list[float] = []

        def runtime() -> float:
            runtimes.append(self.runtime(now))
            return runtimes[-1]

        previous = st.idle_count
        policy = self.policy
        unreadable = bool(readings) and not any(r.readable for r in readings)
        votes = self._grace(p, now, readings)
        if unreadable:
            outcome_step = Step(UNKNOWN, previous, Decision.UNKNOWN, combine(readings)[1])
        else:
            outcome_step = step(policy, previous, votes, runtime, allow_stop)
        st.idle_count = outcome_step.idle_count
        st.last_check, st.last_wall_check = now, wall_now
        st.checks += 1
        st.decision = outcome_step.decision
        st.signals = {r.name: [r.status, r.detail] for r in readings}
        st.idle_limit, st.check_interval, st.min_runtime = policy.idle_limit, policy.check_interval, policy.min_runtime
        limit = policy.idle_limit
        reasons = "; ".join(outcome_step.reasons)
        outcome = None
        decision = outcome_step.decision
        if unreadable:
            self.log.error(
                "%sNo signal readable (%s); the pod is not stopped while nothing can be read. Fix: %s",
                p,
                reasons,
                " / ".join(getattr(s, "fix", s.name) for s in self.signals),
            )
        elif decision == Decision.STOPPED:
            st.stop_failures, st.next_attempt = 0, 0.0
            self.log.info("%sPod %s is not running (%s); nothing to stop, still watching", p, self.pod_id, reasons)
        elif decision == Decision.BUSY:
            st.stop_failures, st.next_attempt = 0, 0.0
            busy = ", ".join(r.name for r in votes if r.status == BUSY)
            self.log.info("%sWork detected (%s); idle count reset%s", p, busy, f" from {previous}" if previous else "")
        elif decision == Decision.UNKNOWN:
            self.log.warning("%sSignal unavailable (%s); idle count stays at %d/%d", p, reasons, st.idle_count, limit)
        else:
            self.log.info("%sidle (%d/%d)", p, st.idle_count, limit)
            if decision == Decision.WAIT_RUNTIME:
                self.log.info(
                    "%sIdle limit reached, but the pod has run %.0fs of the %gs minimum runtime; not stopping yet",
                    p,
                    runtimes[-1],
                    policy.min_runtime,
                )
            elif decision == Decision.HOLD:
                self.log.info(
                    "%sIdle limit reached, but it is peak hours (%s, --peak-preset off); not stopping", p, st.peak
                )
            elif decision == Decision.STOP:
                outcome = self._stop(now, runtimes[-1] if runtimes else None)
        self.save()
        return CheckResult(now, readings, outcome_step, runtimes[-1] if runtimes else None, outcome, unreadable)

    def _note_pod(self, wall_now: float) -> None:
        """Keep the pod's price and uptime (if the API was asked) for status()."""
        status = getattr(self.client, "last_status", None)
        if status is None:
            return
        uptime = status.uptime_now()
        if status.cost_per_hr is not None:
            self.state.pod_cost_per_hr = status.cost_per_hr
        if uptime is not None:
            self.state.pod_uptime, self.state.pod_uptime_at = uptime, wall_now

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
                if r.values:
                    self.log.info("%sGPU utilization: %s", p, format_percentages(r.values))
                if r.status == UNKNOWN:
                    self.log.warning("%sGPU utilization unavailable: %s", p, r.detail)
            elif r.warn:
                self.log.warning("%s%s: %s", p, r.name, r.detail)
        parts = [
            f"{r.name}={r.status}" + ("" if r.name == "gpu" or not r.detail else f" ({r.detail})") for r in readings
        ]
        if parts:
            self.log.info("%sSignals: %s", p, ", ".join(parts))

    def _stop(self, now: float, runtime: float | None) -> str:
        p, st = self._p(now), self.state
        verb = "terminate" if self.action == "terminate" else "stop"
        age = f", runtime {runtime:.0f}s" if runtime is not None else ""
        if self.dry_run:
            self.log.info(
                "%sIdle limit reached (%d/%d%s): [dry-run] would %s pod %s",
                p,
                st.idle_count,
                self.policy.idle_limit,
                age,
                verb,
                self.pod_id or "(no pod id)",
            )
            st.stopped_at, st.idle_count = now, 0
            return WOULD_STOP
        if now < st.next_attempt:
            self.log.info(
                "%sIdle limit reached; next %s attempt in %s (backoff after %d failure(s))",
                p,
                verb,
                seconds(st.next_attempt - now),
                st.stop_failures,
            )
            return BACKOFF
        self.log.info(
            "%sIdle limit reached (%d/%d%s): %s pod %s",
            p,
            st.idle_count,
            self.policy.idle_limit,
            age,
            "terminating" if verb == "terminate" else "stopping",
            self.pod_id,
        )
        assert self.client is not None
        try:
            status = self.client.act(self.action)
        except ApiError as exc:
            st.stop_failures += 1
            delay = backoff_delay(st.stop_failures, self.policy.check_interval)
            st.next_attempt = now + delay
            self.log.error(
                "%sPod %s %s failed (%s); still monitoring, retrying in %s", p, self.pod_id, verb, exc, seconds(delay)
            )
            return FAILED
        self.log.info(
            "%sPod %s %s succeeded (status %s)", p, self.pod_id, "terminate" if verb == "terminate" else "stop", status
        )
        st.stopped_at, st.idle_count, st.stop_failures, st.next_attempt = now, 0, 0, 0.0
        return STOPPED
