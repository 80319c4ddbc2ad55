"""A fake ``pynvml`` (nvidia-ml-py) at the NVML boundary, for the watchdog's tests.

Put this directory first on ``PYTHONPATH`` and point ``FAKE_NVML_FILE`` at a JSON
file (re-read at every call, so a test can change the GPUs while the watchdog runs)::

    {"period": 0.1667, "buffer": 20,
     "gpus": [{"base": 0, "bursts": [[t_start, t_end, 90]]}, {"lost": true}]}

Each GPU's utilisation at epoch time ``t`` is the value of the burst covering ``t``,
else ``base``. Like the driver, NVML keeps one sample per ``period`` seconds for the
last ``buffer`` seconds: ``nvmlDeviceGetSamples`` returns those newer than the given
timestamp (microseconds) or raises NOT_FOUND, and ``nvmlDeviceGetUtilizationRates``
is the latest sample only (one instant). A ``lost`` GPU raises GPU_IS_LOST.
"""

from __future__ import annotations

import json
import math
import os
import time
from types import SimpleNamespace
from typing import Any

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_GPU_UTILIZATION_SAMPLES = 1
NVML_VALUE_TYPE_UNSIGNED_INT = 1

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
}
_initialised = False


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"Unknown Error {self.value}")


def _config() -> dict[str, Any]:
    with open(os.environ["FAKE_NVML_FILE"], encoding="utf-8") as handle:
        return json.load(handle)


def _gpu(handle: int) -> dict[str, Any]:
    if not _initialised:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    gpu = _config()["gpus"][handle]
    if gpu.get("lost"):
        raise NVMLError(NVML_ERROR_GPU_IS_LOST)
    return gpu


def _value(gpu: dict[str, Any], t: float) -> int:
    for start, end, value in gpu.get("bursts", []):
        if start <= t < end:
            return int(value)
    return int(gpu.get("base", 0))


def _grid(now: float) -> tuple[float, list[float]]:
    cfg = _config()
    period, buffer = float(cfg.get("period", 1 / 6)), float(cfg.get("buffer", 20))
    last = math.floor(now / period) * period
    count = int(buffer / period)
    return period, [last - k * period for k in range(count, -1, -1)]


def nvmlInit() -> None:  # noqa: N802 - pynvml's names
    global _initialised
    _config()
    _initialised = True


def nvmlShutdown() -> None:  # noqa: N802
    global _initialised
    _initialised = False


def nvmlDeviceGetCount() -> int:  # noqa: N802
    if not _initialised:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    return len(_config()["gpus"])


def nvmlDeviceGetHandleByIndex(index: int) -> int:  # noqa: N802
    if not _initialised:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    return index


def nvmlDeviceGetUtilizationRates(handle: int) -> Any:  # noqa: N802
    gpu = _gpu(handle)
    _, grid = _grid(time.time())
    return SimpleNamespace(gpu=_value(gpu, grid[-1]), memory=0)


def nvmlDeviceGetSamples(handle: int, sampling_type: int, last_seen: int) -> tuple[int, list[Any]]:  # noqa: N802
    gpu = _gpu(handle)
    if sampling_type != NVML_GPU_UTILIZATION_SAMPLES:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    _, grid = _grid(time.time())
    samples = [
        SimpleNamespace(timeStamp=int(t * 1e6), sampleValue=SimpleNamespace(uiVal=_value(gpu, t)))
        for t in grid
        if int(t * 1e6) > last_seen
    ]
    if not samples:
        raise NVMLError(NVML_ERROR_NOT_FOUND)
    return NVML_VALUE_TYPE_UNSIGNED_INT, samples
