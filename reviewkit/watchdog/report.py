"""``reviewkit.watchdog.status()``: the watchdog's state, for a notebook cell.

Reads the state file the running watchdog writes after every check (idle count,
each signal's last answer, the limits in force) and, when a RunPod key and pod id
are at hand (``RUNPOD_API_KEY``, ``RUNPOD_POD_ID``), asks the API for the pod's
uptime and ``costPerHr``, so the cell can say what the pod has billed since it
started and when the watchdog would stop it if nothing happens::

    import reviewkit.watchdog
    print(reviewkit.watchdog.status())

Without a key the price and uptime the watchdog itself last saw are used, if any.
Only the standard library (and the runpod SDK, for the API) is imported.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from reviewkit.watchdog.state import WatchdogState, default_state_path


@dataclass
class WatchdogStatus:
    """What the watchdog last saw, and what the pod has cost so far."""

    state_file: Path
    pod_id: str | None = None
    found: bool = False  # a state file was there
    last_check: float | None = None  # epoch seconds
    checks: int = 0
    idle_count: int = 0
    idle_limit: int | None = None
    check_interval: float | None = None
    min_runtime: float | None = None
    decision: str | None = None
    signals: dict[str, tuple[str, str]] = field(default_factory=dict)
    peak: str | None = None
    would_stop_at: float | None = None  # earliest stop if every check from now is idle
    desired_status: str | None = None
    uptime_seconds: float | None = None
    cost_per_hr: float | None = None
    billed_dollars: float | None = None
    api_error: str | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines of plain text (what ``print(status())`` shows)."""
        lines = [f"Watchdog state {self.state_file}" + ("" if self.found else " (none yet)")]
        if self.found:
            when = _clock(self.last_check)
            lines.append(f"  last check {when}, {self.checks} check(s); decision: {self.decision}")
            lines.append(
                f"  idle count {self.idle_count}/{self.idle_limit}, check every {self.check_interval:g}s, "
                f"min runtime {self.min_runtime:g}s" + (f", peak hours {self.peak}" if self.peak else "")
            )
            for name, (status, detail) in self.signals.items():
                lines.append(f"  {name}: {status}" + (f" ({detail})" if detail else ""))
            stop = (
                f"at {_clock(self.would_stop_at)} if every check until then is idle"
                if self.would_stop_at is not None
                else "not while the pod is stopped or in peak hours (off)"
            )
            lines.append(f"  would stop: {stop}")
        pod = f"Pod {self.pod_id or '(unknown)'}"
        if self.desired_status:
            pod += f": {self.desired_status}"
        if self.uptime_seconds is not None:
            pod += f", up {self.uptime_seconds / 3600:.2f} h"
        if self.cost_per_hr is not None:
            pod += f" at ${self.cost_per_hr:g}/h"
        if self.billed_dollars is not None:
            pod += f": ${self.billed_dollars:.2f} billed since it started"
        lines.append(pod)
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _clock(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S") if epoch is not None else "never"


def _read_state(path: Path) -> WatchdogState | None:
    try:
        return WatchdogState.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return None


def status(
    state_file: str | os.PathLike[str] | None = None,
    *,
    api_key: str | None = None,
    pod_id: str | None = None,
    client: Any = None,
    now: float | None = None,
) -> WatchdogStatus:
    """The watchdog's state from ``state_file`` (default: the watchdog's default path).

    ``api_key``/``pod_id`` default to ``RUNPOD_API_KEY``/``RUNPOD_POD_ID``; with both
    (or a ready ``client``) the pod's uptime and ``costPerHr`` come from the API.
    """
    now = time.time() if now is None else now
    path = Path(state_file).expanduser() if state_file else default_state_path()
    report = WatchdogStatus(state_file=path)
    state = _read_state(path)
    if state is not None and state.clock == "wall":
        report.found = True
        report.pod_id = state.pod_id
        report.last_check, report.checks = state.last_wall_check, state.checks
        report.idle_count, report.decision, report.peak = state.idle_count, state.decision, state.peak
        report.idle_limit, report.check_interval, report.min_runtime = (
            state.idle_limit,
            state.check_interval,
            state.min_runtime,
        )
        report.signals = {k: (v[0], v[1]) for k, v in state.signals.items() if len(v) == 2}
        if state.pod_uptime is not None and state.pod_uptime_at is not None:
            report.uptime_seconds = state.pod_uptime + (now - state.pod_uptime_at)
        report.cost_per_hr = state.pod_cost_per_hr
        if report.check_interval and report.last_check and now - report.last_check > 3 * report.check_interval:
            report.notes.append(f"no check for {now - report.last_check:.0f}s: is the watchdog running?")
    elif state is not None:
        report.notes.append("the state file is from a --simulate run (trace time), not a running watchdog")
    pod_id = pod_id or report.pod_id or os.environ.get("RUNPOD_POD_ID") or None
    report.pod_id = pod_id
    if client is None and pod_id and (api_key or os.environ.get("RUNPOD_API_KEY")):
        from reviewkit.watchdog.action import RunPodClient

        client = RunPodClient(api_key or os.environ["RUNPOD_API_KEY"], pod_id, timeout=15.0)
    if client is not None:
        from reviewkit.watchdog.action import ApiError

        try:
            pod = client.pod_status()
        except ApiError as exc:
            report.api_error = str(exc)
            report.notes.append(f"RunPod API: {exc}")
        else:
            report.desired_status = pod.desired_status
            report.uptime_seconds = pod.uptime_now() if pod.running else 0.0
            report.cost_per_hr = pod.cost_per_hr if pod.cost_per_hr is not None else report.cost_per_hr
    elif not pod_id:
        report.notes.append("no pod id (RUNPOD_POD_ID) and none in the state file")
    else:
        report.notes.append("no RUNPOD_API_KEY: uptime and price as the watchdog last saw them")
    if report.cost_per_hr is not None and report.uptime_seconds is not None:
        report.billed_dollars = report.cost_per_hr * report.uptime_seconds / 3600.0
    report.would_stop_at = _would_stop(report, state, now)
    return report


def _would_stop(report: WatchdogStatus, state: WatchdogState | None, now: float) -> float | None:
    """Earliest stop: the remaining idle checks, and the minimum runtime, whichever is later."""
    if not report.found or state is None or report.idle_limit is None or report.check_interval is None:
        return None
    if report.decision in ("pod-stopped", "peak-hold") or report.desired_status not in (None, "RUNNING"):
        return None
    last = report.last_check or now
    at = last + max(0, report.idle_limit - report.idle_count) * report.check_interval
    if report.uptime_seconds is not None and report.min_runtime is not None:
        at = max(at, now - report.uptime_seconds + report.min_runtime)
    return at
