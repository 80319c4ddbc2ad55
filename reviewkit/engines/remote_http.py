"""The HTTP client of remote engines: JSON requests with retries, backoff and figures.

A vLLM server on a pod answers at once; a RunPod Serverless endpoint queues, answers
429 when its queue is full, 5xx while a worker starts or dies, and holds the first
request of a burst for a cold start (the model load). So every request is retried on
connection errors, timeouts, 408, 429 and 5xx with exponential backoff and jitter
(honouring ``Retry-After``), never on another 4xx (bad input stays bad). A request
after a quiet spell (the first, one after :data:`WARM_SECONDS` without an answer, or a
retry after a timeout) waits ``cold_start_timeout``, others ``timeout``. Requests go
either to an OpenAI-compatible base URL or, for RunPod's native route, wrapped as a
``/runsync`` job (``{"input": {"openai_route": ..., "openai_input": ...}}``, whose
output is a list holding the OpenAI answer). The API key is sent as a bearer token
and redacted from every message this module builds.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from reviewkit.engines.base import EngineFigures

log = logging.getLogger("reviewkit")

RETRY_STATUS = frozenset({408, 429})
#: A serverless worker stops after its idle timeout (RunPod's default: 5 s); a request
#: after a quieter spell may meet a cold start, so it gets ``cold_start_timeout``.
WARM_SECONDS = 5.0
#: RunPod job states after which the job will not change any more.
FINAL_JOB_STATES = ("COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED")


class RemoteError(RuntimeError):
    """A remote engine request failed; the message names the fix where there is one."""


class RemoteConnectionError(RemoteError):
    """The server could not be reached (or kept failing) after all retries."""


class RemoteAuthError(RemoteError):
    """The server refused the API key (401/403)."""


class RemoteRequestError(RemoteError):
    """The server refused a request (a 4xx other than 408/429): retrying cannot help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Retryable(Exception):
    """Internal: this attempt failed in a way worth another try."""

    def __init__(
        self, reason: str, retry_after: float | None = None, timed_out: bool = False, refused: bool = False
    ) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.timed_out = timed_out
        self.refused = refused  # no connection at all: a wrong URL, or a server not started


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry; the defaults ride out a serverless cold start."""

    max_retries: int = 8
    backoff_seconds: float = 0.5  # first backoff; doubles per retry
    max_backoff_seconds: float = 30.0
    timeout: float = 120.0  # per request once the server has answered
    cold_start_timeout: float = 600.0  # the first request, and retries after a timeout
    connect_timeout: float = 10.0
    poll_interval: float = 1.0  # RunPod job status polling

    def backoff(self, retry: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter (half fixed, half random), at least ``Retry-After``."""
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * 2**retry)
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, max(self.max_backoff_seconds, 60.0)))
        return delay


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def server_message(body: Any, text: str) -> str:
    """The error message of a vLLM/OpenAI error body (``{"error": {"message": ...}}``), else the text."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return text.strip()[:300]


class HttpClient:
    """JSON over HTTP to one server, thread-safe, counting requests, retries and waits.

    ``base_url`` is the OpenAI base (``.../v1``); with ``runsync_url`` set, OpenAI routes
    are sent as RunPod jobs to that endpoint instead.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        policy: RetryPolicy,
        figures: EngineFigures,
        runsync_url: str | None = None,
    ) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.runsync_url = runsync_url
        self.policy = policy
        self.figures = figures
        self._api_key = api_key
        self._lock = threading.Lock()
        self._last_success: float | None = None  # monotonic time of the latest answered request
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            headers=headers,
            follow_redirects=True,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    @property
    def server_root(self) -> str:
        """Where vLLM's own routes (``/tokenize``, ``/metrics``, ``/version``) live."""
        return self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url

    @property
    def warm(self) -> bool:
        """Whether the server answered within :data:`WARM_SECONDS` (else expect a cold start)."""
        return self._last_success is not None and time.monotonic() - self._last_success < WARM_SECONDS

    def redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def openai(
        self, method: str, route: str, body: dict[str, Any] | None = None, *, max_retries: int | None = None
    ) -> Any:
        """Call an OpenAI route (``/v1/models``, ``/v1/completions``) directly or as a RunPod job."""
        if self.runsync_url is None:
            return self.request(method, self.base_url + route.removeprefix("/v1"), body, max_retries=max_retries)
        return self._job(route, body or {}, max_retries=max_retries)

    def request(
        self,
        method: str,
        url: str,
        body: dict[str, Any] | None = None,
        *,
        max_retries: int | None = None,
        expect_json: bool = True,
    ) -> Any:
        """One JSON request with retries; returns the decoded JSON (or text)."""
        retries = self.policy.max_retries if max_retries is None else max_retries
        after_timeout = False
        for attempt in range(retries + 1):
            try:
                return self._attempt(method, url, body, expect_json, long_wait=after_timeout or not self.warm)
            except _Retryable as failure:
                after_timeout = failure.timed_out
                if failure.refused and self._last_success is None and attempt >= min(retries, 2):
                    raise RemoteConnectionError(
                        self.redact(
                            f"cannot connect to {url} ({failure}): check the URL, and that the server is running "
                            "(vLLM's server is ready when GET /health answers 200)"
                        )
                    ) from None
                if attempt >= retries:
                    raise RemoteConnectionError(
                        self.redact(
                            f"{method} {url} failed after {attempt + 1} attempt(s): {failure}. Check that the "
                            "server is running and reachable (a RunPod Serverless endpoint: its workers and "
                            "queue in the RunPod console)."
                        )
                    ) from None
                delay = self.policy.backoff(attempt, failure.retry_after)
                log.info("remote: %s; retry %d/%d in %.1f s", self.redact(str(failure)), attempt + 1, retries, delay)
                with self._lock:
                    self.figures.retries += 1
                    self.figures.wait_seconds += delay
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, method: str, url: str, body: dict[str, Any] | None, expect_json: bool, long_wait: bool) -> Any:
        import httpx

        read = self.policy.cold_start_timeout if long_wait else self.policy.timeout
        timeout = httpx.Timeout(read, connect=self.policy.connect_timeout)
        with self._lock:
            self.figures.requests += 1
        try:
            response = self._http.request(method, url, json=body, timeout=timeout)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"no answer within {read:.0f} s ({type(exc).__name__})", timed_out=True) from None
        except httpx.ConnectError as exc:
            raise _Retryable(f"connection error ({type(exc).__name__}: {exc})", refused=True) from None
        except httpx.TransportError as exc:
            raise _Retryable(f"connection error ({type(exc).__name__}: {exc})") from None
        status = response.status_code
        if status in RETRY_STATUS or status >= 500:
            raise _Retryable(
                f"HTTP {status} {response.reason_phrase} ({self._message(response)})",
                parse_retry_after(response.headers.get("retry-after")),
            )
        if status in (401, 403):
            raise RemoteAuthError(
                f"{url} refused the API key (HTTP {status}): pass api_key=... to reviewkit.connect (or set "
                "REVIEWKIT_ENGINE_API_KEY; for RunPod, RUNPOD_API_KEY) with a key the server accepts."
            )
        if status >= 400:
            raise RemoteRequestError(
                self.redact(f"{method} {url} was refused with HTTP {status}: {self._message(response)}"), status
            )
        self._last_success = time.monotonic()
        if not expect_json:
            return response.text
        try:
            return response.json()
        except json.JSONDecodeError:
            raise RemoteRequestError(
                self.redact(
                    f"{url} answered HTTP {status} with something that is not JSON ({response.text[:120]!r}): "
                    "is this the URL of a vLLM OpenAI-compatible server?"
                ),
                status,
            ) from None

    def _message(self, response: Any) -> str:
        try:
            body = response.json()
        except ValueError:
            body = None
        return self.redact(server_message(body, response.text))

    def _job(self, route: str, body: dict[str, Any], *, max_retries: int | None) -> Any:
        """A RunPod ``/runsync`` job carrying an OpenAI request; polls ``/status`` if it is not done."""
        assert self.runsync_url is not None
        retries = self.policy.max_retries if max_retries is None else max_retries
        job = {"input": {"openai_route": route, "openai_input": body}}
        endpoint = self.runsync_url.rsplit("/", 1)[0]
        for attempt in range(retries + 1):
            state = self.request("POST", self.runsync_url, job, max_retries=max_retries)
            deadline = time.monotonic() + self.policy.cold_start_timeout
            while state.get("status") not in FINAL_JOB_STATES and time.monotonic() < deadline:
                time.sleep(self.policy.poll_interval)
                with self._lock:
                    self.figures.wait_seconds += self.policy.poll_interval
                state = self.request("GET", f"{endpoint}/status/{state['id']}", max_retries=max_retries)
            status = state.get("status")
            try:
                if status == "COMPLETED":
                    return self._job_output(state, route)
            except RemoteRequestError as refused:
                if refused.status not in RETRY_STATUS and refused.status < 500:
                    raise
                status = f"COMPLETED with HTTP {refused.status}"
            reason = self.redact(str(state.get("error") or status))
            if attempt >= retries:
                raise RemoteConnectionError(
                    f"RunPod job for {route} ended {status} after {attempt + 1} attempt(s): {reason}"
                )
            delay = self.policy.backoff(attempt, None)
            log.info("remote: RunPod job %s (%s); retry %d/%d in %.1f s", status, reason, attempt + 1, retries, delay)
            with self._lock:
                self.figures.retries += 1
                self.figures.wait_seconds += delay
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _job_output(self, state: dict[str, Any], route: str) -> Any:
        output = state.get("output")
        if isinstance(output, list):  # the worker yields its answer; RunPod aggregates a list
            if len(output) != 1:
                raise RemoteRequestError(f"RunPod job for {route} returned {len(output)} outputs, expected 1", 502)
            output = output[0]
        if isinstance(output, dict) and ("error" in output or output.get("object") == "error"):
            error = output.get("error")
            code = error.get("code") if isinstance(error, dict) else output.get("code")
            status = int(code) if isinstance(code, int) or (isinstance(code, str) and code.isdigit()) else 400
            raise RemoteRequestError(
                self.redact(f"RunPod job for {route} was refused: {server_message(output, str(output))}"), status
            )
        return output

    def close(self) -> None:
        self._http.close()
