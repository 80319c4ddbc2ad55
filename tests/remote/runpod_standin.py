"""A loopback stand-in for RunPod Serverless, in front of a real vLLM server or answering itself.

It speaks the routes a RunPod vLLM endpoint offers, under runpod-python's endpoint base URL
(``<base>/<endpoint_id>/...``): the OpenAI route (``/openai/v1/...``), native jobs
(``/runsync`` with ``{"input": {"openai_route", "openai_input"}}``, answered
``{"id", "status", "output": [answer]}`` when the job ends within ``?wait=<ms>``, else
``{"id", "status": "IN_QUEUE"}`` or ``IN_PROGRESS``; a worker thread runs the job),
``/status/<id>``, ``/cancel/<id>`` and the free ``/health`` (workers and job counts, the
shape of RunPod's docs). It checks the bearer key like RunPod (401 otherwise), counts the
jobs submitted and cancelled (each one is billed on RunPod), and injects what a serverless
endpoint does to clients: 429 with ``Retry-After`` (queue full), 500, a request left
unanswered past the client's timeout, a held first request (a cold start), a job queued
until cancelled, a FAILED job, a connection dropped after the job was made, and an older
vLLM that ignores ``logprob_token_ids``. Only /tokenize and /metrics are missing, as on RunPod.

With ``upstream=None`` it answers the OpenAI routes itself (a model card, and fixed label
log-probabilities): for tests of the job protocol, health and cache keys, which need no engine.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import httpx

#: Faults for the next scoring requests (completions asking for ``logprob_token_ids``), in order.
FAULTS = ("429", "500", "timeout", "queue", "hold", "fail", "drop")
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


class RunPodStandIn:
    """Start with :meth:`start`; ``base_url`` is what ``runpod.endpoint_url_base`` should be."""

    def __init__(
        self,
        upstream: str | None,
        api_key: str,
        endpoint_id: str = "ep-standin",
        *,
        served_model: str = "standin-model",
        max_model_len: int | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/") if upstream else None  # the real server's root, or None
        self.api_key = api_key
        self.endpoint_id = endpoint_id
        self.served_model = served_model  # the model card's id when answering itself
        self.max_model_len = max_model_len  # reported in /v1/models (overrides the upstream's)
        self.faults: deque[str] = deque()  # one of FAULTS per scoring request
        self.hold_first_seconds = 0.0  # hold the next request this long (a cold start)
        self.health_hold_seconds = 0.0  # hold each /health this long (a stalled API)
        self.timeout_sleep = 3.0
        self.ignore_logprob_token_ids = False
        self.log: list[dict[str, Any]] = []
        self.jobs: dict[str, dict[str, Any]] = {}  # every job ever made, by id: {"status", "output", ...}
        self.submitted: list[str] = []  # job ids in the order they were made (RunPod bills each)
        self.cancelled: list[str] = []  # job ids /cancel stopped before they ended
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=120)
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v2"

    @property
    def openai_url(self) -> str:
        return f"{self.base_url}/{self.endpoint_id}/openai/v1"

    @property
    def runsync_url(self) -> str:
        return f"{self.base_url}/{self.endpoint_id}/runsync"

    def start(self) -> RunPodStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                standin._handle(self, None)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                standin._handle(self, json.loads(self.rfile.read(length) or b"null"))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._http.close()

    # -- what the tests read ------------------------------------------------------------------

    def scoring_requests(self) -> list[dict[str, Any]]:
        return [e for e in self.log if e.get("scoring")]

    def requests_to(self, operation: str) -> list[dict[str, Any]]:
        """Requests to one operation of the endpoint: ``health``, ``status``, ``cancel``, ``runsync``."""
        prefix = f"/v2/{self.endpoint_id}/{operation}"
        return [e for e in self.log if e["path"] == prefix or e["path"].startswith(prefix + "/")]

    # -- requests ---------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler, body: Any) -> None:
        auth = request.headers.get("authorization")
        path, _, query = request.path.partition("?")
        entry: dict[str, Any] = {"path": path, "query": query, "auth_ok": auth == f"Bearer {self.api_key}"}
        with self._lock:
            self.log.append(entry)
        if not entry["auth_ok"]:
            return _send(request, 401, {"error": "Unauthorized"})
        prefix = f"/v2/{self.endpoint_id}/"
        if not path.startswith(prefix):
            return _send(request, 404, {"error": "no such endpoint"})
        rest = path[len(prefix) :]
        if rest.startswith("openai/v1/"):
            return self._openai(request, entry, "/" + rest[len("openai/") :], body, native=False)
        if rest == "runsync" and isinstance(body, dict):
            job = body.get("input") or {}
            entry["wait"] = float(parse_qs(query).get("wait", ["90000"])[0]) / 1000  # RunPod's ?wait=<ms>
            return self._openai(request, entry, job.get("openai_route", ""), job.get("openai_input"), native=True)
        if rest == "health":
            return self._health(request)
        if rest.startswith("status/"):
            return self._status(request, rest[len("status/") :])
        if rest.startswith("cancel/") and request.command == "POST":
            return self._cancel(request, rest[len("cancel/") :])
        return _send(request, 404, {"error": "Not Found"})

    def _health(self, request: BaseHTTPRequestHandler) -> None:
        if self.health_hold_seconds:
            time.sleep(self.health_hold_seconds)
        with self._lock:
            states = [job["status"] for job in self.jobs.values()]
        jobs = {
            "completed": states.count("COMPLETED"),
            "failed": states.count("FAILED"),
            "inProgress": states.count("IN_PROGRESS"),
            "inQueue": states.count("IN_QUEUE"),
            "retried": 0,
        }
        return _send(request, 200, {"jobs": jobs, "workers": {"idle": 1, "running": jobs["inProgress"]}})

    def _status(self, request: BaseHTTPRequestHandler, job_id: str) -> None:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is not None and job["status"] == "IN_QUEUE" and job["done"].is_set():
                job["status"] = "COMPLETED"  # a queued job is picked up by the next poll
            state = None if job is None else _state(job_id, job)
        if state is None:
            return _send(request, 404, {"error": f"job {job_id} not found"})
        return _send(request, 200, state)

    def _cancel(self, request: BaseHTTPRequestHandler, job_id: str) -> None:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is not None and job["status"] not in FINAL:
                job["status"] = "CANCELLED"
                self.cancelled.append(job_id)
        if job is None:
            return _send(request, 404, {"error": f"job {job_id} not found"})
        return _send(request, 200, {"id": job_id, "status": job["status"]})

    def _openai(
        self, request: BaseHTTPRequestHandler, entry: dict[str, Any], route: str, body: Any, native: bool
    ) -> None:
        scoring = route == "/v1/completions" and isinstance(body, dict) and "logprob_token_ids" in body
        entry.update(route=route, native=native, scoring=scoring)
        with self._lock:
            hold, self.hold_first_seconds = self.hold_first_seconds, 0.0
        if hold and not native:  # the first request of a burst waits for a worker to load the model
            time.sleep(hold)
        fault = None
        if scoring:
            entry["prompts"] = len(body["prompt"])
            with self._lock:
                fault = self.faults.popleft() if self.faults else None
            entry["fault"] = fault
            if fault == "429":  # refused before a job is made
                return _send(request, 429, {"error": "too many requests in queue"}, {"Retry-After": "1"})
            if fault == "500":
                return _send(request, 500, {"error": "worker failed"})
            if fault == "timeout":
                if native:
                    self._new_job(body, "IN_PROGRESS")
                time.sleep(self.timeout_sleep)  # the client has given up by now
                return _send(request, 504, {"error": "gateway timeout"})
            if self.ignore_logprob_token_ids:  # an older vLLM drops fields it does not know
                body = {k: v for k, v in body.items() if k != "logprob_token_ids"}
        if not native:
            return _send(request, *self._answer(route, body))
        if fault == "fail":
            job_id = self._new_job(body, "FAILED", error="CUDA error: out of memory (stand-in worker)")
        else:  # a worker runs it (after a cold start); "queue" shows it queued, "hold" never runs it
            job_id = self._new_job(body, "IN_QUEUE", hold=fault == "hold")
            if fault != "hold":
                threading.Thread(
                    target=self._work, args=(job_id, route, body, hold, fault != "queue"), daemon=True
                ).start()
        job = self.jobs[job_id]
        if fault not in ("queue", "hold"):  # /runsync answers when the job ends, or after ?wait
            job["done"].wait(entry["wait"])
        if fault == "drop":  # the job exists, but its id never reaches the client
            request.close_connection = True
            return None
        with self._lock:
            state = _state(job_id, job)
        return _send(request, 200, state)

    def _new_job(self, body: Any, status: str, *, error: str | None = None, hold: bool = False) -> str:
        job_id = f"job-{uuid.uuid4()}-u1"
        done = threading.Event()
        if status in FINAL:
            done.set()
        with self._lock:
            self.jobs[job_id] = {
                "status": status,
                "output": None,
                "error": error,
                "hold": hold,
                "input": body,
                "done": done,
            }
            self.submitted.append(job_id)
        return job_id

    def _work(self, job_id: str, route: str, body: Any, cold_start: float, finish: bool) -> None:
        """A worker runs the job: its answer is the OpenAI route's (``finish=False``: shown on the next poll)."""
        time.sleep(cold_start)
        job = self.jobs[job_id]
        with self._lock:
            if job["status"] == "CANCELLED":
                return
            if finish:
                job["status"] = "IN_PROGRESS"
        output = [self._answer(route, body)[1]]
        with self._lock:
            job["output"] = output
            if finish and job["status"] == "IN_PROGRESS":
                job["status"] = "COMPLETED"
        job["done"].set()

    def _answer(self, route: str, body: Any) -> tuple[int, Any]:
        """The OpenAI answer: the upstream's, or the stand-in's own."""
        if self.upstream is None:
            return own_answer(route, body, self.served_model, self.max_model_len or 2048)
        url = self.upstream + route
        response = self._http.get(url) if body is None or route == "/v1/models" else self._http.post(url, json=body)
        answer = response.json()
        if route == "/v1/models" and self.max_model_len and response.status_code == 200:
            for card in answer["data"]:  # as if the server had been started with --max-model-len
                card["max_model_len"] = self.max_model_len
        return response.status_code, answer


def own_answer(route: str, body: Any, served_model: str, max_model_len: int) -> tuple[int, Any]:
    """What a vLLM server would answer, with fixed label log-probabilities (-0.5, then -1.5)."""
    if route == "/v1/models":
        return 200, {
            "object": "list",
            "data": [{"id": served_model, "object": "model", "root": served_model, "max_model_len": max_model_len}],
        }
    if route != "/v1/completions" or not isinstance(body, dict):
        return 404, {"error": {"message": f"no route {route}", "code": 404}}
    prompt = body.get("prompt")
    prompts = prompt if isinstance(prompt, list) and prompt and isinstance(prompt[0], list) else [prompt]
    wanted = body.get("logprob_token_ids") or []
    choices = []
    for index, _ in enumerate(prompts):
        step = {f"token_id:{t}": (-0.5 if k == 0 else -1.5) for k, t in enumerate(wanted)}
        choices.append({"index": index, "text": "", "logprobs": {"top_logprobs": [step]}, "finish_reason": "length"})
    tokens = sum(len(p) if isinstance(p, list) else 1 for p in prompts)
    return 200, {
        "object": "text_completion",
        "model": served_model,
        "choices": choices,
        "usage": {
            "prompt_tokens": tokens,
            "completion_tokens": len(prompts),
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }


def _state(job_id: str, job: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = {"id": job_id, "status": job["status"]}
    if job["status"] == "COMPLETED":
        state["output"] = job["output"]
    if job["status"] == "FAILED":
        state["error"] = job["error"]
    return state


def _send(request: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    try:
        request.send_response(status)
        request.send_header("content-type", "application/json")
        request.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up (a timeout it was meant to hit)
