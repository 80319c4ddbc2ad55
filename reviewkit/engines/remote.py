"""Remote engines: a vLLM OpenAI-compatible server (a pod's ``vllm serve``, RunPod Serverless).

Scores are the in-process ones: the prompts are sent as token ids built by a local copy
of the server's tokenizer (checked against the server's on connect), with the shared
prefix aligned to the server's KV block size so its prefix cache serves it, and each
prompt gets one forward pass (``max_tokens=1``) that returns the log-probabilities of
exactly the label tokens (vLLM's ``logprob_token_ids``, also checked on connect: an
older vLLM ignores the field silently). Batches go out several at a time and come back
in input order; :mod:`reviewkit.engines.remote_http` retries what is worth retrying, and
:mod:`reviewkit.engines.runpod_jobs` runs them as RunPod jobs on a ``/runsync`` URL.
``check_alive`` asks a free ``/health`` route (vLLM's, or the RunPod endpoint's), never a job.

    reviewkit.connect("http://POD_IP:8000/v1")                         # a pod's vllm serve
    reviewkit.connect("https://api.runpod.ai/v2/ENDPOINT_ID/openai/v1", api_key=KEY)
    reviewkit.connect("https://api.runpod.ai/v2/ENDPOINT_ID/runsync", api_key=KEY)  # native jobs
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

from reviewkit.engines.base import Engine, EngineDeadError, ScoredPrompt
from reviewkit.engines.remote_http import (
    HttpClient,
    RemoteAuthError,
    RemoteCheckError,
    RemoteConnectionError,
    RemoteError,
    RemoteRequestError,
)
from reviewkit.engines.remote_settings import RemoteSettings, RetryPolicy, settings_from_environment
from reviewkit.engines.remote_tokenizer import fingerprint, load_tokenizer
from reviewkit.engines.runpod_jobs import RemoteJobError, RunPodJobs

__all__ = [
    "HEALTH_TIMEOUT",
    "RemoteAuthError",
    "RemoteCheckError",
    "RemoteConnectionError",
    "RemoteEngine",
    "RemoteError",
    "RemoteJobError",
    "RemoteRequestError",
    "RemoteSettings",
    "RetryPolicy",
    "settings_from_environment",
]

log = logging.getLogger("reviewkit")

#: The vLLM whose OpenAI server returns the log-probabilities of requested token ids
#: (``logprob_token_ids`` on /v1/completions, vllm-project/vllm PR #43463, 2026-05).
MIN_VLLM_VERSION = "0.32"
#: vLLM's default KV block size on GPUs, used when the server does not publish its own.
DEFAULT_BLOCK_SIZE = 16
#: Seconds ``check_alive`` waits for ``/health`` (one request, no retry; runpod-python's own
#: health check waits 3 s too): a liveness check must answer fast, and costs nothing.
HEALTH_TIMEOUT = 3.0


class RemoteEngine(Engine):
    """A vLLM server used as reviewkit's engine (see the module docstring)."""

    device = "remote"

    def __init__(self, settings: RemoteSettings) -> None:
        super().__init__()
        self.settings = settings
        self.client = HttpClient(api_key=settings.api_key, policy=settings.retry, figures=self.figures)
        self.jobs = RunPodJobs(self.client, settings.url) if settings.is_runsync else None
        self._pool = ThreadPoolExecutor(max_workers=settings.max_in_flight, thread_name_prefix="reviewkit-remote")
        self.served_model = ""
        self._tokenizer_name = ""
        self.server_version: str | None = None
        self.max_model_len = 0
        self.load_seconds = 0.0
        self._block_size = settings.block_size or DEFAULT_BLOCK_SIZE
        self.reports_cached_tokens = False
        self.tokenizer_fingerprint = ""
        self._closed = False

    @classmethod
    def open(cls, settings: RemoteSettings) -> RemoteEngine:
        """Connect and check: the served model, the tokenizer, and ``logprob_token_ids``."""
        started = time.perf_counter()
        engine = cls(settings)
        try:
            engine._choose_model()
            engine.tokenizer = load_tokenizer(settings.tokenizer or engine._tokenizer_name)
            engine.tokenizer_fingerprint = fingerprint(engine.tokenizer)
            engine._read_server_facts()
            engine._check_tokenizer()
            engine._probe_label_logprobs()
        except BaseException:
            engine.close()
            raise
        engine.load_seconds = time.perf_counter() - started
        log.info("connected in %.1f s: %r", engine.load_seconds, engine)
        return engine

    def __repr__(self) -> str:
        version = f", vLLM {self.server_version}" if self.server_version else ""
        return (
            f"<reviewkit.RemoteEngine {self.served_model!r} at {self.settings.url}{version}, "
            f"max_model_len={self.max_model_len}, connected in {self.load_seconds:.1f}s>"
        )

    @property
    def model_id(self) -> str:
        return self.served_model

    @property
    def prefix_block_size(self) -> int:
        return self._block_size

    @property
    def cache_identity(self) -> str:
        """The base identity, the local tokenizer's fingerprint and the server (host, RunPod endpoint)."""
        return f"{super().cache_identity}|tokenizer={self.tokenizer_fingerprint}|server={self.settings.server_identity}"

    def _openai(
        self, method: str, route: str, body: dict[str, Any] | None = None, *, stop: threading.Event | None = None
    ) -> Any:
        """Call an OpenAI route (``/v1/models``, ``/v1/completions``) directly, or as a RunPod job."""
        if self.jobs is not None:
            return self.jobs.call(route, body or {}, stop=stop)
        return self.client.request(method, self.settings.base_url + route.removeprefix("/v1"), body)

    # -- connect checks ------------------------------------------------------------------

    def _choose_model(self) -> None:
        url = self.settings.url
        try:
            listing = self._openai("GET", "/v1/models")
        except RemoteRequestError as exc:
            if exc.status in (404, 405):
                raise RemoteCheckError(
                    f"no vLLM OpenAI API at {url} (HTTP {exc.status} for /v1/models): use the server's root or "
                    "its /v1 (a pod: http://HOST:8000/v1; RunPod Serverless: "
                    "https://api.runpod.ai/v2/ENDPOINT_ID/openai/v1)"
                ) from None
            raise
        cards = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(cards, list) or not cards:
            raise RemoteCheckError(f"{url} answered /v1/models without a model list: is it a vLLM server?")
        wanted = self.settings.model
        if wanted is None and len(cards) > 1:
            raise RemoteCheckError(
                f"{url} serves several models {[c.get('id') for c in cards]}: pass model=... to reviewkit.connect"
            )
        card = cards[0] if wanted is None else next((c for c in cards if wanted in (c.get("id"), c.get("root"))), None)
        if card is None:
            served = [c.get("id") for c in cards]
            raise RemoteCheckError(
                f"{url} serves {served}, not {wanted!r}: pass model={served[0]!r} (or unset "
                f"LLM_MODEL), or serve {wanted!r} there"
            )
        self.served_model = str(card["id"])
        self._tokenizer_name = str(card.get("root") or card["id"])
        if not card.get("max_model_len"):
            raise RemoteCheckError(
                f"{url} does not report max_model_len for {self.served_model!r}: reviewkit "
                f"needs vLLM >= {MIN_VLLM_VERSION} on the server"
            )
        self.max_model_len = int(card["max_model_len"])

    def _read_server_facts(self) -> None:
        """vLLM's version and KV block size, where the server publishes them (not on RunPod)."""
        if self.settings.is_runsync:
            return
        root = self.settings.server_root
        try:
            self.server_version = str(self.client.request("GET", root + "/version", max_retries=1)["version"])
        except (RemoteError, KeyError, TypeError):
            pass
        if self.settings.block_size:
            return
        try:
            metrics = self.client.request("GET", root + "/metrics", max_retries=1, expect_json=False)
        except RemoteError:
            metrics = ""
        found = re.search(r"vllm:cache_config_info\{([^}]*)\}", metrics)
        labels = dict(re.findall(r'(\w+)="([^"]*)"', found.group(1))) if found else {}
        if labels.get("enable_prefix_caching") == "False":
            log.warning(
                "the server runs without prefix caching: every review recomputes the few-shot prompt "
                "(start it with --enable-prefix-caching)"
            )
        if labels.get("block_size", "").isdigit():
            self._block_size = int(labels["block_size"])
        else:
            log.info(
                "the server does not publish its KV block size; assuming %d (pass block_size=...)", self._block_size
            )

    def _check_tokenizer(self) -> None:
        from reviewkit.prompts import default_templates

        for template in default_templates().values():
            text = template.prefix_text()
            local = list(self.tokenizer(text)["input_ids"])
            server = self._server_tokens(text)
            if server is None:
                log.warning("cannot compare tokenizers: the server has neither /tokenize nor return_token_ids")
                return
            if server != local:
                at = next(
                    (i for i, (a, b) in enumerate(zip(local, server, strict=False)) if a != b),
                    min(len(local), len(server)),
                )
                raise RemoteCheckError(
                    f"the local tokenizer ({self.settings.tokenizer or self._tokenizer_name}) splits the prompt "
                    f"differently from the server's {self.served_model!r} (token {at}: local "
                    f"{local[at : at + 3]}, server {server[at : at + 3]}): pass tokenizer=<the served model's "
                    "Hugging Face id or a local copy of its folder>"
                )

    def _server_tokens(self, text: str) -> list[int] | None:
        if not self.settings.is_runsync:
            try:
                answer = self.client.request(
                    "POST",
                    self.settings.server_root + "/tokenize",
                    {"model": self.served_model, "prompt": text},
                    max_retries=1,
                )
                return [int(t) for t in answer["tokens"]]
            except (RemoteRequestError, KeyError, TypeError):
                pass  # RunPod's OpenAI route has no /tokenize: ask the completions route instead
        answer = self._openai(
            "POST",
            "/v1/completions",
            {"model": self.served_model, "prompt": text, "max_tokens": 1, "temperature": 0, "return_token_ids": True},
        )
        ids = answer["choices"][0].get("prompt_token_ids")
        return None if ids is None else [int(t) for t in ids]

    def _probe_label_logprobs(self) -> None:
        """Refuse a server that ignores ``logprob_token_ids`` (it would return top-N only)."""
        from reviewkit.prompts import default_templates

        built = default_templates()["en"].build(self.tokenizer, self.prefix_block_size)
        review = self.tokenizer([" great food"], add_special_tokens=False)["input_ids"][0]
        answer = self._complete([built.prompt_ids(review)], built.label_token_ids)
        details = (answer.get("usage") or {}).get("prompt_tokens_details")
        self.reports_cached_tokens = isinstance(details, dict) and details.get("cached_tokens") is not None
        if not self.reports_cached_tokens:
            log.warning(
                "the server does not report cached prompt tokens: start it with "
                "--enable-prompt-tokens-details for prefix-cache figures"
            )
        self._parse(answer, 1, built.label_token_ids)

    # -- scoring ---------------------------------------------------------------------------

    def score_labels(self, prompts: Sequence[list[int]], label_token_ids: list[int]) -> list[ScoredPrompt]:
        size = self.settings.batch_size
        batches = [[list(p) for p in prompts[i : i + size]] for i in range(0, len(prompts), size)]
        stop = threading.Event()  # set when this call fails or is interrupted: its RunPod jobs are cancelled
        futures = [self._pool.submit(self._score_batch, batch, list(label_token_ids), stop) for batch in batches]
        scored: list[ScoredPrompt] = []
        try:
            # The first failure ends the call at once, not after the batches before it.
            wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception()), None)
            if failed is not None:
                failed.result()  # raises its exception
            for future in futures:  # submission order is input order
                scored.extend(future.result())
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise
        return scored

    def _score_batch(
        self, batch: list[list[int]], label_token_ids: list[int], stop: threading.Event | None = None
    ) -> list[ScoredPrompt]:
        answer = self._complete(batch, label_token_ids, stop)
        logprobs = self._parse(answer, len(batch), label_token_ids)
        details = (answer.get("usage") or {}).get("prompt_tokens_details") or {}
        # vLLM reports the cached tokens of one prompt per request (the last). The prompts of
        # a batch share their few-shot prefix, so each is counted with that figure, capped at
        # its length: an estimate of the prefix-cache hits, exact for the last prompt.
        last_cached = int(details.get("cached_tokens") or 0)
        return [
            ScoredPrompt(label_logprobs=lp, prompt_tokens=len(p), cached_tokens=min(last_cached, len(p)))
            for lp, p in zip(logprobs, batch, strict=True)
        ]

    def _complete(
        self, prompts: list[list[int]], label_token_ids: list[int], stop: threading.Event | None = None
    ) -> dict[str, Any]:
        return self._openai(
            "POST",
            "/v1/completions",
            {
                "model": self.served_model,
                "prompt": prompts,
                "max_tokens": 1,
                "temperature": 0,
                "logprobs": 1,
                "logprob_token_ids": label_token_ids,
                "return_tokens_as_token_ids": True,
            },
            stop=stop,
        )

    def _parse(self, answer: Any, expected: int, label_token_ids: list[int]) -> list[list[float]]:
        """Label log-probabilities per prompt, by choice index; refuses lost or duplicated answers."""
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list) or sorted(c.get("index", -1) for c in choices) != list(range(expected)):
            raise RemoteError(
                f"the server answered {expected} prompts with choices "
                f"{[c.get('index') for c in choices or []]}: expected indexes 0..{expected - 1}"
            )
        rows: list[list[float]] = [[] for _ in range(expected)]
        for choice in choices:
            step = ((choice.get("logprobs") or {}).get("top_logprobs") or [None])[0] or {}
            values = [step.get(f"token_id:{t}") for t in label_token_ids]
            if any(v is None for v in values):
                version = f" (it reports vLLM {self.server_version})" if self.server_version else ""
                raise RemoteCheckError(
                    f"the server at {self.settings.url} did not return the requested label log-probabilities"
                    f"{version}: it ignores logprob_token_ids or return_tokens_as_token_ids. Run vLLM >= "
                    f"{MIN_VLLM_VERSION} there (pip install -U vllm; on RunPod a worker image with it)"
                )
            rows[choice["index"]] = [float(v) for v in values]
        return rows

    def generate_text(self, prompts: Sequence[list[int]], max_tokens: int) -> list[str]:
        answer = self._openai(
            "POST",
            "/v1/completions",
            {
                "model": self.served_model,
                "prompt": [list(p) for p in prompts],
                "max_tokens": max_tokens,
                "temperature": 0,
            },
        )
        return [c["text"] for c in sorted(answer["choices"], key=lambda c: c["index"])]

    def check_alive(self) -> None:
        """One GET of a free ``/health`` (:data:`HEALTH_TIMEOUT` s, no retry, never a billed job)."""
        if self._closed:
            raise EngineDeadError("the remote engine was closed")
        try:
            self.client.probe(self.settings.health_url, HEALTH_TIMEOUT)
        except RemoteError as exc:
            raise EngineDeadError(f"the server at {self.settings.url} does not answer: {exc}") from exc

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.jobs is not None:
            self.jobs.close()  # cancels the jobs still queued or running
        self.client.close()
