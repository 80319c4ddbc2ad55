"""Signals of work on the pod: each answers busy, idle or unknown, with a detail.

The watchdog stops a pod only when *every* signal says idle, so each signal is
written to err on the side of "busy" or "unknown": a signal that cannot be read
(NVML error, Jupyter unreachable, corrupt file) says unknown, which freezes the idle
count instead of advancing it. Only stdlib (plus ``pynvml`` on first NVML read)
is imported here.

``since`` is the wall-clock time (epoch seconds) of the previous check: a signal
that reports a last-activity time counts activity after ``since`` as work.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from reviewkit import activity as _activity

BUSY = "busy"
IDLE = "idle"
UNKNOWN = "unknown"


class SignalError(Exception):
    """A signal could not be read; the message says why (never a secret)."""


@dataclass(frozen=True)
class Reading:
    """One signal's answer at one check. ``warn`` asks the caller to log a warning."""

    name: str
    status: str
    detail: str
    values: tuple[float, ...] = ()
    warn: bool = False


class Signal(Protocol):
    name: str

    def read(self, since: float) -> Reading: ...


class UtilizationReader(Protocol):
    """Per-GPU utilisation percentages; raises :class:`SignalError` when unreadable."""

    description: str

    def read(self) -> list[float]: ...


def format_percentages(values: tuple[float, ...] | list[float]) -> str:
    return ", ".join(f"{v:g}%" for v in values)


class GpuSignal:
    """GPU utilisation: busy when any GPU is at or above the threshold."""

    name = "gpu"

    def __init__(self, reader: UtilizationReader, threshold: float) -> None:
        self.reader = reader
        self.threshold = threshold

    def read(self, since: float = 0.0) -> Reading:
        try:
            values = tuple(float(v) for v in self.reader.read())
        except SignalError as exc:
            return Reading(self.name, UNKNOWN, f"{self.reader.description}: {exc}")
        if not values:
            return Reading(self.name, UNKNOWN, f"{self.reader.description}: no GPU found")
        status = BUSY if any(v >= self.threshold for v in values) else IDLE
        return Reading(self.name, status, format_percentages(values), values)


class NvmlReader:
    """Live utilisation from NVML (``nvidia-ml-py``), initialised on first read.

    After an NVML error the library is shut down and initialised again at the next
    read, so a transient driver hiccup does not stick.
    """

    description = "NVML"

    def __init__(self) -> None:
        self._nvml: Any = None

    def read(self) -> list[float]:
        try:
            import pynvml
        except ImportError as exc:
            raise SignalError("nvidia-ml-py (pynvml) is not installed") from exc
        try:
            if self._nvml is None:
                pynvml.nvmlInit()
                self._nvml = pynvml
            count = pynvml.nvmlDeviceGetCount()
            return [
                float(pynvml.nvmlDeviceGetUtilizationRates(pynvml.nvmlDeviceGetHandleByIndex(i)).gpu)
                for i in range(count)
            ]
        except pynvml.NVMLError as exc:
            self.close()
            raise SignalError(f"NVML error: {exc}") from exc

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down a broken NVML is best effort
                pass
            self._nvml = None


class RunPodReader:
    """Utilisation reported by the RunPod API, for a watchdog on a separate server.

    ``client`` is an :class:`reviewkit.watchdog.action.RunPodClient` (any object with
    ``pod_status(max_age)`` returning ``gpu_utils``).
    """

    description = "RunPod API"

    def __init__(self, client: Any) -> None:
        self.client = client

    def read(self) -> list[float]:
        from reviewkit.watchdog.action import ApiError

        try:
            status = self.client.pod_status(max_age=0.0)
        except ApiError as exc:
            raise SignalError(str(exc)) from exc
        if status.gpu_utils is None:
            raise SignalError(f"pod has no runtime (desired status {status.desired_status})")
        return list(status.gpu_utils)


def parse_time(value: Any) -> float:
    """Epoch seconds from epoch seconds or an ISO 8601 string (naive means UTC)."""
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    raise ValueError(f"not a time: {value!r}")


def _get_json(url: str, headers: dict[str, str], timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise SignalError(f"HTTP {exc.code} from {url.split('?')[0]}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SignalError(f"{url.split('?')[0]} unreachable: {reason}") from exc
    try:
        return json.loads(body)
    except ValueError as exc:
        raise SignalError(f"{url.split('?')[0]} did not answer JSON") from exc


def _ago(when: float, now: float) -> str:
    return f"{max(0.0, now - when):.0f}s ago"


class JupyterSignal:
    """Jupyter Server: busy kernels, or kernel/terminal activity since the last check.

    Polls only requests that do not count as activity themselves: ``/api/status``
    (``_track_activity = False`` in jupyter_server) and ``/api/kernels`` and
    ``/api/terminals`` with ``?no_track_activity=1``. The server-wide
    ``last_activity`` is not used: an open JupyterLab tab's background polling moves
    it forever. Kernel ``last_activity`` moves with execution and output.
    """

    name = "jupyter"
    STARTING_GRACE = 300.0

    def __init__(self, url: str, token: str | None = None, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._headers = {"Authorization": f"token {token}"} if token else {}

    def _get(self, path: str) -> Any:
        return _get_json(self.url + path, self._headers, self.timeout)

    @staticmethod
    def _busy(kernel: dict[str, Any], now: float) -> bool:
        """Busy, or starting for less than STARTING_GRACE seconds.

        The server reports "starting" until it sees the kernel's first status
        message; a kernel nobody ever connected to can stay "starting" forever,
        which must not keep the pod up forever.
        """
        state = kernel.get("execution_state")
        if state == "busy":
            return True
        if state != "starting":
            return False
        try:
            return now - parse_time(kernel.get("last_activity")) < JupyterSignal.STARTING_GRACE
        except (TypeError, ValueError):
            return True

    def read(self, since: float) -> Reading:
        try:
            self._get("/api/status")
            kernels = self._get("/api/kernels?no_track_activity=1")
        except SignalError as exc:
            return Reading(self.name, UNKNOWN, str(exc))
        try:  # terminals are optional (extension may be absent or disabled)
            terminals = self._get("/api/terminals?no_track_activity=1")
        except SignalError:
            terminals = []
        if not isinstance(kernels, list) or not isinstance(terminals, list):
            return Reading(self.name, UNKNOWN, "unexpected /api/kernels answer")
        now = time.time()
        busy = [k for k in kernels if self._busy(k, now)]
        if busy:
            names = ", ".join(str(k.get("id", "?"))[:8] for k in busy)
            return Reading(self.name, BUSY, f"{len(busy)} kernel(s) busy ({names})")
        latest = None
        for item in [*kernels, *terminals]:
            try:
                stamp = parse_time(item.get("last_activity"))
            except (TypeError, ValueError):
                continue
            latest = stamp if latest is None else max(latest, stamp)
        if latest is not None and latest > since:
            return Reading(self.name, BUSY, f"kernel activity {_ago(latest, now)}")
        last = f", last activity {_ago(latest, now)}" if latest is not None else ""
        return Reading(self.name, IDLE, f"{len(kernels)} kernel(s) idle{last}")


class HealthSignal:
    """The seed's ``/health`` endpoint: JSON with ``busy`` and/or ``last_activity``."""

    name = "health"

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout

    def read(self, since: float) -> Reading:
        try:
            data = _get_json(self.url, {}, self.timeout)
        except SignalError as exc:
            return Reading(self.name, UNKNOWN, str(exc))
        if not isinstance(data, dict):
            return Reading(self.name, UNKNOWN, "health answer is not a JSON object")
        busy = data.get("busy")
        if busy is True:
            return Reading(self.name, BUSY, "busy")
        raw = data.get("last_activity")
        if raw is not None:
            try:
                stamp = parse_time(raw)
            except (TypeError, ValueError):
                return Reading(self.name, UNKNOWN, f"unreadable last_activity {raw!r}")
            if stamp > since:
                return Reading(self.name, BUSY, f"activity {_ago(stamp, time.time())}")
            return Reading(self.name, IDLE, f"last activity {_ago(stamp, time.time())}")
        if busy is False:
            return Reading(self.name, IDLE, "not busy")
        return Reading(self.name, UNKNOWN, "answer has neither 'busy' nor 'last_activity'")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: exists, owned by someone else
        return True
    return True


class ActivityFileSignal:
    """reviewkit's activity file (:mod:`reviewkit.activity`).

    Busy with a live pid and a fresh heartbeat is work; ``updated`` after the last
    check is work (an analysis ended in between); a busy record with a dead pid or a
    heartbeat older than ``STALE_AFTER_SECONDS`` is a crashed run: idle, with a
    warning. No file means reviewkit never ran here: idle.
    """

    name = "activity"

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = _activity.activity_path(path)

    def read(self, since: float) -> Reading:
        try:
            record = _activity.read_activity(self.path)
        except (OSError, ValueError) as exc:
            return Reading(self.name, UNKNOWN, f"unreadable activity file: {exc}")
        if record is None:
            return Reading(self.name, IDLE, "no activity file")
        now = time.time()
        try:
            updated = parse_time(record.get("updated"))
        except (TypeError, ValueError):
            return Reading(self.name, UNKNOWN, f"{self.path}: no valid 'updated' time")
        label = record.get("label") or "analyze"
        stale = None
        if record.get("state") == "busy":
            pid, host = record.get("pid"), record.get("host")
            if now - updated > _activity.STALE_AFTER_SECONDS:
                stale = f"heartbeat {_ago(updated, now)}"
            elif isinstance(pid, int) and host in (None, socket.gethostname()) and not _pid_alive(pid):
                stale = f"pid {pid} is gone"
            if stale is None:
                return Reading(self.name, BUSY, f"reviewkit {label} running (pid {pid})")
        if updated > since:
            return Reading(self.name, BUSY, f"reviewkit active {_ago(updated, now)}")
        if stale is not None:
            return Reading(self.name, IDLE, f"stale busy record ({stale}); treated as idle", warn=True)
        return Reading(self.name, IDLE, f"reviewkit idle, last active {_ago(updated, now)}")
