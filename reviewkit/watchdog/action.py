"""Talking to RunPod through its Python SDK: pod status, stop, terminate, resume.

The SDK does not read ``RUNPOD_API_KEY`` by itself (it reads ``~/.runpod`` and the
module attribute ``runpod.api_key``), so the client sets ``runpod.api_key``; every
SDK call then sends it as ``Authorization: Bearer ...`` to
``$RUNPOD_API_BASE_URL/graphql`` (read by the SDK at each call).

Every failure (HTTP error, timeout, GraphQL error, 401) becomes an :class:`ApiError`
whose message has the key scrubbed out, so nothing the watchdog logs can leak it.
The SDK's own HTTP timeout is a fixed 30 s, so calls run in a daemon thread with
our own deadline: a hanging API delays one check, not the watchdog.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

# The GraphQL ``pod`` query the SDK's ``get_pod`` does not cover: its field list has
# no GPU telemetry, which ``--source runpod`` needs. The other fields are the SDK's
# own names (runpod/api/queries/pods.py): costPerHr in $/hour, gpuCount for resume.
_POD_QUERY = """
query pod {{
    pod(input: {{podId: "{pod_id}"}}) {{
        id
        desiredStatus
        costPerHr
        gpuCount
        uptimeSeconds
        runtime {{
            uptimeInSeconds
            gpus {{ id gpuUtilPercent }}
        }}
    }}
}}
"""


class ApiError(Exception):
    """A RunPod API call failed; the message never contains the API key."""


@dataclass(frozen=True)
class PodStatus:
    """What the ``pod`` query said, and when (``time.monotonic()``) it was asked."""

    desired_status: str | None
    uptime: float | None
    gpu_utils: tuple[float | None, ...] | None  # None for a GPU the API has no figure for
    fetched_at: float
    cost_per_hr: float | None = None
    gpu_count: int | None = None

    @property
    def running(self) -> bool:
        return self.desired_status in (None, "RUNNING")

    def uptime_now(self) -> float | None:
        """Uptime extrapolated to now, so a cached answer stays usable."""
        if self.uptime is None:
            return None
        return self.uptime + (time.monotonic() - self.fetched_at)


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``."""
    if secret:
        text = text.replace(secret, "***")
    return text


def _call_with_deadline(fn: Callable[[], Any], timeout: float) -> Any:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, name="runpod-call", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout:g}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


class RunPodClient:
    """One pod, one key: the SDK calls the watchdog needs, with deadline and redaction."""

    def __init__(self, api_key: str, pod_id: str, timeout: float = 30.0) -> None:
        self._key = api_key
        self.pod_id = pod_id
        self.timeout = timeout
        self.calls = 0
        self._status: PodStatus | None = None
        self._sdk: Any = None

    @property
    def sdk(self) -> Any:
        """The runpod module, imported on first use (it takes a second or two), key set."""
        if self._sdk is None:
            import runpod

            self._sdk = runpod
        # Set at every call: another library in the process may have changed it.
        self._sdk.api_key = self._key
        return self._sdk

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        self.calls += 1
        try:
            _ = self.sdk  # import and set the key here, before the deadline starts
            return _call_with_deadline(fn, self.timeout)
        except Exception as exc:  # noqa: BLE001 - every failure is reported the same way
            message = f"{what} failed: {type(exc).__name__}: {exc}"
            raise ApiError(redact(message, self._key)) from None

    def pod_status(self, max_age: float = 0.0) -> PodStatus:
        """The pod's status, from cache when younger than ``max_age`` seconds."""
        cached = self._status
        if cached is not None and time.monotonic() - cached.fetched_at <= max_age:
            return cached
        query = _POD_QUERY.format(pod_id=self.pod_id)

        def ask() -> Any:
            from runpod.api.graphql import run_graphql_query

            return run_graphql_query(query)

        answer = self._call("pod query", ask)
        try:
            pod = answer["data"]["pod"]
        except (KeyError, TypeError):
            raise ApiError("pod query failed: answer has no data.pod") from None
        if pod is None:
            raise ApiError(f"pod query failed: no pod {self.pod_id} visible to this key")
        runtime = pod.get("runtime") or None
        uptime = None
        gpus: tuple[float | None, ...] | None = None
        if runtime:
            uptime = runtime.get("uptimeInSeconds")
            gpus = tuple(_number(g.get("gpuUtilPercent")) for g in runtime.get("gpus") or [])
        if uptime is None:
            uptime = pod.get("uptimeSeconds")
        count = _number(pod.get("gpuCount"))
        status = PodStatus(
            desired_status=pod.get("desiredStatus"),
            uptime=_number(uptime),
            gpu_utils=gpus,
            fetched_at=time.monotonic(),
            cost_per_hr=_number(pod.get("costPerHr")),
            gpu_count=int(count) if count is not None else None,
        )
        self._status = status
        return status

    @property
    def last_status(self) -> PodStatus | None:
        """The latest pod-query answer, if any (no API call)."""
        return self._status

    def stop(self) -> str:
        """Stop the pod (``podStop``); returns the new desired status."""
        answer = self._call("podStop", lambda: self.sdk.stop_pod(self.pod_id))
        if not answer:
            raise ApiError("podStop failed: empty answer")
        return str(answer.get("desiredStatus") or "unknown") if isinstance(answer, dict) else "ok"

    def terminate(self) -> str:
        """Terminate the pod (``podTerminate``): its disk is gone for good."""
        self._call("podTerminate", lambda: self.sdk.terminate_pod(self.pod_id))
        return "TERMINATED"

    def resume(self, gpu_count: int) -> str:
        """Resume a stopped pod (``podResume``) with ``gpu_count`` GPUs."""
        answer = self._call("podResume", lambda: self.sdk.resume_pod(self.pod_id, gpu_count))
        if not answer:
            raise ApiError("podResume failed: empty answer")
        return str(answer.get("desiredStatus") or "unknown") if isinstance(answer, dict) else "ok"

    def act(self, action: str) -> str:
        """Run ``action`` (``stop`` or ``terminate``)."""
        if action == "terminate":
            return self.terminate()
        return self.stop()


def _number(value: Any) -> float | None:
    """A JSON number as float; null (or anything else) as None, never 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
