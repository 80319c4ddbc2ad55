"""Remote engine settings: the server's URL, the API key, batching, retries and deadlines.

Everything a user passes to ``reviewkit.connect`` lives here, separate from the engine,
so settings can be made, compared and read from the environment without connecting
(``load()`` compares them to decide "same engine").
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from reviewkit.settings import env_flag

ENV_URL = "REVIEWKIT_ENGINE_URL"
ENV_API_KEY = "REVIEWKIT_ENGINE_API_KEY"
RUNPOD_DEFAULT_BASE = "https://api.runpod.ai/v2"  # runpod-python's default endpoint_url_base
#: The OpenAI route of a RunPod Serverless endpoint: ``<base>/<endpoint_id>/openai/v1``.
RUNPOD_OPENAI_SUFFIX = "/openai/v1"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry; the defaults ride out a serverless cold start.

    ``job_deadline`` and ``job_resubmits`` bound a RunPod ``/runsync`` call, whose jobs are
    billed: one deadline for the whole call (submission, queue, run, resubmissions), after
    which the job is cancelled, and how often a FAILED or TIMED_OUT job is submitted again.
    """

    max_retries: int = 8
    backoff_seconds: float = 0.5  # first backoff; doubles per retry
    max_backoff_seconds: float = 30.0
    timeout: float = 120.0  # per request once the server has answered
    cold_start_timeout: float = 600.0  # the first request, and retries after a timeout
    connect_timeout: float = 10.0
    poll_interval: float = 1.0  # RunPod job status polling
    job_deadline: float = 900.0  # a RunPod job call, all included: a cold start (600 s) and the run
    job_resubmits: int = 1  # a FAILED job again once: a lost worker passes, a bad batch costs 2x

    def backoff(self, retry: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter (half fixed, half random), at least ``Retry-After``."""
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * 2**retry)
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, max(self.max_backoff_seconds, 60.0)))
        return delay


_POLICY_FIELDS = tuple(f.name for f in dataclasses.fields(RetryPolicy))
_COUNT_FIELDS = ("max_retries", "job_resubmits")  # whole numbers, 0 allowed; the other fields are seconds


@dataclass(frozen=True)
class RemoteSettings:
    """Where the server is and how to talk to it; equal settings mean the same engine.

    The API key is compared but never shown (not in ``repr``, ``describe`` or errors).
    """

    url: str
    api_key: str | None = field(default=None, repr=False)
    model: str | None = None
    tokenizer: str | None = None  # a local folder or Hugging Face id; default: the served model
    batch_size: int = 64  # prompts per /v1/completions request
    max_in_flight: int = 4  # requests at once
    block_size: int | None = None  # the server's KV block size; default: read from its /metrics
    retry: RetryPolicy = RetryPolicy()

    @classmethod
    def create(cls, url: str, api_key: str | None = None, model: str | None = None, **options: Any) -> RemoteSettings:
        """Validated settings. ``options``: ``tokenizer``, ``batch_size``, ``max_in_flight``,
        ``block_size`` and the :class:`RetryPolicy` fields (``max_retries``, ``timeout``,
        ``cold_start_timeout``, ``backoff_seconds``, ...)."""
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url.strip()):
            raise ValueError(f"url must be an http:// or https:// address of a vLLM server, got {url!r}")
        policy_options = {k: options.pop(k) for k in list(options) if k in _POLICY_FIELDS}
        known = {"tokenizer", "batch_size", "max_in_flight", "block_size"}
        unknown = set(options) - known
        if unknown:
            raise TypeError(
                f"unknown remote engine option(s) {sorted(unknown)}; known: {sorted(known | set(_POLICY_FIELDS))}"
            )
        for name in ("batch_size", "max_in_flight", "block_size", *_COUNT_FIELDS):
            value = options.get(name, policy_options.get(name))
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < (0 if name in _COUNT_FIELDS else 1)
            ):
                raise ValueError(
                    f"{name} must be a {'non-negative' if name in _COUNT_FIELDS else 'positive'} integer, got {value!r}"
                )
        for name, value in policy_options.items():
            if name not in _COUNT_FIELDS and not (
                isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            ):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        return cls(
            url=url.strip().rstrip("/"),
            api_key=api_key or None,
            model=model or None,
            retry=RetryPolicy(**policy_options),
            **options,
        )

    @property
    def is_runsync(self) -> bool:
        """RunPod's native job route (``.../runsync``) rather than an OpenAI base URL."""
        return self.url.endswith("/runsync")

    @property
    def base_url(self) -> str:
        """The OpenAI base (``.../v1``); for ``/runsync`` URLs, the endpoint itself."""
        if self.is_runsync:
            return self.url.rsplit("/", 1)[0]
        return self.url if self.url.endswith("/v1") else self.url + "/v1"

    @property
    def server_root(self) -> str:
        """Where vLLM's own routes (``/health``, ``/tokenize``, ``/metrics``, ``/version``) live."""
        return self.base_url.removesuffix("/v1")

    @property
    def runpod_endpoint(self) -> str | None:
        """``<base>/<endpoint_id>`` when the URL is a RunPod Serverless route (``/runsync`` or
        ``/openai/v1``), else None."""
        if self.is_runsync:
            return self.base_url
        return (
            self.base_url.removesuffix(RUNPOD_OPENAI_SUFFIX) if self.base_url.endswith(RUNPOD_OPENAI_SUFFIX) else None
        )

    @property
    def health_url(self) -> str:
        """A free liveness route: vLLM's ``/health``, or a RunPod endpoint's ``/health`` (which
        counts workers and jobs without running one)."""
        return f"{self.runpod_endpoint or self.server_root}/health"

    @property
    def server_identity(self) -> str:
        """The server in the result cache's key: its host (not the port, which a restarted local
        server changes), plus the endpoint id on RunPod, whose endpoints share one host."""
        host = (urlsplit(self.url).hostname or "").lower()
        endpoint = self.runpod_endpoint
        return f"{host}/{endpoint.rsplit('/', 1)[1]}" if endpoint else host

    def describe(self) -> str:
        parts = [
            f"url={self.url!r}",
            f"model={self.model!r}",
            f"api_key={'set' if self.api_key else None}",
            f"batch_size={self.batch_size}",
            f"max_in_flight={self.max_in_flight}",
        ]
        if self.tokenizer:
            parts.append(f"tokenizer={self.tokenizer!r}")
        if self.block_size:
            parts.append(f"block_size={self.block_size}")
        default = RetryPolicy()
        parts += [
            f"{name}={getattr(self.retry, name)}"
            for name in _POLICY_FIELDS
            if getattr(self.retry, name) != getattr(default, name)
        ]
        return ", ".join(parts)


def settings_from_environment(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``reviewkit.connect`` arguments from the environment.

    ``REVIEWKIT_ENGINE_URL`` (+ ``REVIEWKIT_ENGINE_API_KEY``) names any vLLM server; else the
    seed's ``USE_RUNPOD=true`` + ``RUNPOD_ENDPOINT_ID`` + ``RUNPOD_API_KEY`` name a RunPod
    Serverless endpoint's OpenAI route under runpod-python's ``runpod.endpoint_url_base``
    (``$RUNPOD_ENDPOINT_BASE_URL``, default https://api.runpod.ai/v2). ``LLM_MODEL``, if
    set, must be the served model.
    """
    env = os.environ if env is None else env
    model = env.get("LLM_MODEL") or None
    url = env.get(ENV_URL, "").strip()
    if url:
        return {"url": url, "api_key": env.get(ENV_API_KEY) or None, "model": model}
    if not env_flag("USE_RUNPOD", env):
        raise ValueError(f"set {ENV_URL} (a vLLM server) or USE_RUNPOD=true (a RunPod Serverless endpoint)")
    endpoint_id = env.get("RUNPOD_ENDPOINT_ID", "").strip()
    if not endpoint_id:
        raise ValueError(
            "USE_RUNPOD=true needs RUNPOD_ENDPOINT_ID (the id in the endpoint's URL, "
            "https://console.runpod.io/serverless)"
        )
    api_key = env.get("RUNPOD_API_KEY") or _runpod_attribute("api_key", None)
    if not api_key:
        raise ValueError("USE_RUNPOD=true needs RUNPOD_API_KEY (https://console.runpod.io/user/settings)")
    base = _runpod_attribute("endpoint_url_base", env.get("RUNPOD_ENDPOINT_BASE_URL") or RUNPOD_DEFAULT_BASE)
    return {"url": f"{base.rstrip('/')}/{endpoint_id}/openai/v1", "api_key": api_key, "model": model}


def _runpod_attribute(name: str, default: Any) -> Any:
    """A setting of runpod-python (which reads its environment variables at import)."""
    try:
        import runpod
    except ImportError:
        return default
    return getattr(runpod, name, None) or default
