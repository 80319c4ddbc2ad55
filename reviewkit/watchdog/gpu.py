"""The GPU signal: utilisation over the whole check interval, per GPU.

One instant per check misses bursty work (a training step every few seconds with
CPU work in between reads 0 % at the moment of the check), so :class:`NvmlReader`
drains NVML's sample buffer (``nvmlDeviceGetSamples``) since the previous read and
reports each GPU's *peak* over the interval; the loop also calls :meth:`poll`
between checks so an interval longer than the driver's buffer is still covered.
Where the buffer is not supported it falls back to one reading per poll.

A GPU that cannot be read is unknown on its own (``gpu1``): the others still count.
"""

from __future__ import annotations

from typing import Any, Protocol

from reviewkit.watchdog.signals import BUSY, IDLE, STOPPED, UNKNOWN, Reading, SignalError, format_percentages

# Which field of NVML's value union holds a sample of each value type.
_VALUE_FIELDS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")


class PodNotRunning(SignalError):
    """``--source runpod``: the pod is stopped (or not yet running); nothing to stop."""


class UtilizationReader(Protocol):
    """Per-GPU utilisation (None: that GPU unreadable); raises :class:`SignalError` when none is."""

    description: str

    def read(self) -> list[float | None]: ...


class GpuSignal:
    """GPU utilisation: busy when any readable GPU is at or above the threshold."""

    name = "gpu"
    fix = "install nvidia-ml-py and check the driver (nvidia-smi), or use --source none on a machine without a GPU"

    def __init__(self, reader: UtilizationReader, threshold: float) -> None:
        self.reader = reader
        self.threshold = threshold

    def poll(self) -> None:
        """Take an extra reading between checks (readers that support it)."""
        poll = getattr(self.reader, "poll", None)
        if poll is not None:
            poll()

    def read(self, since: float = 0.0) -> Reading:
        try:
            raw = list(self.reader.read())
        except PodNotRunning as exc:
            return Reading(self.name, STOPPED, str(exc))
        except SignalError as exc:
            return Reading(self.name, UNKNOWN, f"{self.reader.description}: {exc}")
        if not raw:
            return Reading(self.name, UNKNOWN, f"{self.reader.description}: no GPU found")
        values = tuple(float(v) for v in raw if v is not None)
        missing = tuple(f"gpu{i}" for i, v in enumerate(raw) if v is None)
        errors = getattr(self.reader, "errors", {}) or {}
        shown = format_percentages(values)
        if missing:
            why = "; ".join(f"{m}: {errors.get(m, 'no value')}" for m in missing)
            shown = (shown + "; " if shown else "") + f"unreadable {why}"
        if any(v >= self.threshold for v in values):
            return Reading(self.name, BUSY, shown, values, parts=())
        if missing:
            return Reading(self.name, UNKNOWN, f"{self.reader.description}: {shown}", values, parts=missing)
        return Reading(self.name, IDLE, shown, values)


class NvmlReader:
    """Live utilisation from NVML (``nvidia-ml-py``), initialised on first read.

    After an error that hits every GPU (init, device count) NVML is shut down and
    initialised again at the next read, so a transient driver hiccup does not stick.
    """

    description = "NVML"

    def __init__(self) -> None:
        self._nvml: Any = None
        self._last_seen: dict[int, int] = {}  # newest sample timestamp (µs) per GPU
        self._peak: dict[int, float] = {}  # peak since the last read(), from polls
        self.errors: dict[str, str] = {}

    def _init(self) -> Any:
        try:
            import pynvml
        except ImportError as exc:
            raise SignalError("nvidia-ml-py (pynvml) is not installed") from exc
        if self._nvml is None:
            try:
                pynvml.nvmlInit()
            except pynvml.NVMLError as exc:
                raise SignalError(f"NVML error: {exc}") from exc
            self._nvml = pynvml
        return pynvml

    def _one(self, nvml: Any, index: int) -> float:
        """Peak utilisation of GPU ``index`` since its last sample seen."""
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        try:
            kind, samples = nvml.nvmlDeviceGetSamples(
                handle, nvml.NVML_GPU_UTILIZATION_SAMPLES, self._last_seen.get(index, 0)
            )
        except nvml.NVMLError as exc:
            if getattr(exc, "value", None) not in (
                nvml.NVML_ERROR_NOT_FOUND,
                nvml.NVML_ERROR_NOT_SUPPORTED,
                getattr(nvml, "NVML_ERROR_FUNCTION_NOT_FOUND", -1),
            ):
                raise
            samples = []  # no new sample (or no buffer): one instant reading instead
        field = _VALUE_FIELDS[kind] if samples and 0 <= kind < len(_VALUE_FIELDS) else "uiVal"
        values = [float(getattr(s.sampleValue, field)) for s in samples]
        if samples:
            self._last_seen[index] = max(int(s.timeStamp) for s in samples)
            return max(values)
        return float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)

    def _sweep(self) -> list[float | None]:
        nvml = self._init()
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            self.close()
            raise SignalError(f"NVML error: {exc}") from exc
        out: list[float | None] = []
        for i in range(count):
            try:
                value = self._one(nvml, i)
            except nvml.NVMLError as exc:
                self.errors[f"gpu{i}"] = f"NVML error: {exc}"
                out.append(None)
                continue
            self.errors.pop(f"gpu{i}", None)
            out.append(value)
        return out

    def poll(self) -> None:
        """Fold the samples so far into the interval's peak (called between checks)."""
        try:
            values = self._sweep()
        except SignalError:
            return  # read() reports it
        for i, v in enumerate(values):
            if v is not None:
                self._peak[i] = max(v, self._peak.get(i, 0.0))

    def read(self) -> list[float | None]:
        values = self._sweep()
        peaks, self._peak = self._peak, {}
        return [None if v is None else max(v, peaks.get(i, 0.0)) for i, v in enumerate(values)]

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down a broken NVML is best effort
                pass
            self._nvml = None


class RunPodReader:
    """Utilisation reported by the RunPod API, for a watchdog on a separate server.

    ``client`` is an :class:`reviewkit.watchdog.action.RunPodClient`. A stopped pod
    raises :class:`PodNotRunning` (read as "stopped", never as idle or unknown); a
    GPU whose utilisation the API reports as null is unknown, not 0 %.
    """

    description = "RunPod API"

    def __init__(self, client: Any) -> None:
        self.client = client
        self.errors: dict[str, str] = {}

    def read(self) -> list[float | None]:
        from reviewkit.watchdog.action import ApiError

        try:
            status = self.client.pod_status(max_age=0.0)
        except ApiError as exc:
            raise SignalError(str(exc)) from exc
        if status.desired_status not in (None, "RUNNING"):
            raise PodNotRunning(f"pod is {status.desired_status}")
        if status.gpu_utils is None:
            raise SignalError("pod has no runtime yet (starting?)")
        self.errors = {f"gpu{i}": "the API reports no utilisation" for i, v in enumerate(status.gpu_utils) if v is None}
        return list(status.gpu_utils)
