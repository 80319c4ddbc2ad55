"""The HTTP client of remote engines: JSON requests with retries, backoff and figures.

A vLLM server on a pod answers at once; a RunPod Serverless endpoint queues, answers
429 when its queue is full, 5xx while a worker starts or dies, and holds the first
request of a burst for a cold start (the model load). So every request is retried on
connection errors, timeouts, 408, 429 and 5xx with exponential backoff and jitter
(honouring ``Retry-After``), never on another 4xx (bad input stays bad). A request
after a quiet spell (the first, one after :data:`WARM_SECONDS` without an answer, or a
retry after a timeout) waits ``cold_start_timeout``, others ``timeout``. A request that
must not reach the server twice (``replay_safe=False``: a RunPod job is billed) is
retried only when it certainly did not arrive; a ``deadline`` caps the waits and the
retries of one call. RunPod's job protocol itself is :mod:`reviewkit.engines.runpod_jobs`.
The API key is sent as a bearer token and redacted from every message this module builds.
"""

from __future__ import annotations

import email.utils
import json
import logging
import threading
import time
from typing import Any

from reviewkit.engines.base import EngineFigures
from reviewkit.engines.remote_settings import RetryPolicy

__all__ = [
    "HttpClient",
    "RemoteAuthError",
    "RemoteCheckError",
    "RemoteConnectionError",
    "RemoteDeliveryUnknown",
    "RemoteError",
    "RemoteRequestError",
    "RetryPolicy",
    "parse_retry_after",
    "server_message",
]

log = logging.getLogger("reviewkit")

RETRY_STATUS = frozenset({408, 429})
#: A serverless worker stops after its idle timeout (RunPod's default: 5 s); a request
#: after a quieter spell may meet a cold start, so it gets ``cold_start_timeout``.
WARM_SECONDS = 5.0


class RemoteError(RuntimeError):
    """A remote engine request failed; the message names the fix where there is one."""


class RemoteConnectionError(RemoteError):
    """The server could not be reached (or kept failing) after all retries."""


class RemoteAuthError(RemoteError):
    """The server refused the API key (401/403)."""


class RemoteDeliveryUnknown(RemoteConnectionError):
    """A request that must not be sent twice failed after it may have reached the server."""


class RemoteCheckError(RemoteError):
    """The server is reachable but cannot give reviewkit's scores; the message names the fix."""


class RemoteRequestError(RemoteError):
    """The server refused a request (a 4xx other than 408/429): retrying cannot help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Retryable(Exception):
    """Internal: this attempt failed in a way worth another try."""

    def __init__(
        self,
        reason: str,
        retry_after: float | None = None,
        timed_out: bool = False,
        refused: bool = False,
        maybe_delivered: bool = False,
    ) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.timed_out = timed_out
        self.refused = refused  # no connection at all: a wrong URL, or a server not started
        # The request may have reached the server, which may act on it (no answer came back).
        self.maybe_delivered = maybe_delivered


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
    """JSON over HTTP to one server, thread-safe, counting requests, retries and waits."""

    def __init__(self, *, api_key: str | None, policy: RetryPolicy, figures: EngineFigures) -> None:
        import httpx

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
    def warm(self) -> bool:
        """Whether the server answered within :data:`WARM_SECONDS` (else expect a cold start)."""
        return self._last_success is not None and time.monotonic() - self._last_success < WARM_SECONDS

    def redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def count_wait(self, seconds: float, *, retry: bool = False) -> None:
        """Add a wait (and a retry) to the engine's figures."""
        with self._lock:
            self.figures.wait_seconds += seconds
            self.figures.retries += int(retry)

    def request(
        self,
        method: str,
        url: str,
        body: dict[str, Any] | None = None,
        *,
        max_retries: int | None = None,
        expect_json: bool = True,
        deadline: float | None = None,
        replay_safe: bool = True,
    ) -> Any:
        """One JSON request with retries; returns the decoded JSON (or text).

        ``deadline`` (a :func:`time.monotonic` time) caps every wait and retry of the call.
        ``replay_safe=False``: a failure after which the server may have acted on the request
        (no answer within the timeout, a connection lost after sending) is raised, not retried.
        """
        retries = self.policy.max_retries if max_retries is None else max_retries
        after_timeout = False
        for attempt in range(retries + 1):
            left = None if deadline is None else deadline - time.monotonic()
            try:
                return self._attempt(
                    method, url, body, expect_json, long_wait=after_timeout or not self.warm, left=left
                )
            except _Retryable as failure:
                after_timeout = failure.timed_out
                if failure.maybe_delivered and not replay_safe:
                    raise RemoteDeliveryUnknown(
                        self.redact(
                            f"{method} {url} failed after the request was sent ({failure}): the server may have "
                            "acted on it, so it is not sent again"
                        )
                    ) from None
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
                if deadline is not None and time.monotonic() + delay >= deadline:
                    raise RemoteConnectionError(
                        self.redact(
                            f"{method} {url} failed after {attempt + 1} attempt(s), and the call's deadline "
                            f"leaves no time for another: {failure}"
                        )
                    ) from None
                log.info("remote: %s; retry %d/%d in %.1f s", self.redact(str(failure)), attempt + 1, retries, delay)
                self.count_wait(delay, retry=True)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def probe(self, url: str, timeout: float) -> Any:
        """One GET within ``timeout`` seconds, no retry, not counted: for liveness checks."""
        import httpx

        try:
            response = self._http.get(url, timeout=httpx.Timeout(timeout))
        except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: the client is closed
            raise RemoteConnectionError(
                self.redact(f"GET {url}: no answer within {timeout:g} s ({type(exc).__name__})")
            ) from None
        if response.status_code != 200:
            raise RemoteRequestError(
                self.redact(f"GET {url} answered HTTP {response.status_code}: {self._message(response)}"),
                response.status_code,
            )
        try:
            return response.json()
        except ValueError:
            return response.text

    def _attempt(
        self, method: str, url: str, body: dict[str, Any] | None, expect_json: bool, long_wait: bool, left: float | None
    ) -> Any:
        import httpx

        read = self.policy.cold_start_timeout if long_wait else self.policy.timeout
        if left is not None:
            read = max(0.1, min(read, left))
        connect = min(self.policy.connect_timeout, read)
        timeout = httpx.Timeout(read, connect=connect)
        with self._lock:
            self.figures.requests += 1
        try:
            response = self._http.request(method, url, json=body, timeout=timeout)
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:  # never sent
            raise _Retryable(f"no connection within {connect:.0f} s ({type(exc).__name__})", timed_out=True) from None
        except httpx.TimeoutException as exc:
            raise _Retryable(
                f"no answer within {read:.0f} s ({type(exc).__name__})",
                timed_out=True,
                maybe_delivered=not isinstance(exc, httpx.WriteTimeout),
            ) from None
        except httpx.ConnectError as exc:
            raise _Retryable(f"connection error ({type(exc).__name__}: {exc})", refused=True) from None
        except httpx.TransportError as exc:
            raise _Retryable(
                f"connection error ({type(exc).__name__}: {exc})", maybe_delivered=not isinstance(exc, httpx.WriteError)
            ) from None
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

    def close(self) -> None:
        self._http.close()
