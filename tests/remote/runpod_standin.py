"""A loopback stand-in for RunPod Serverless in front of a real vLLM server.

It speaks the two routes a RunPod vLLM endpoint offers, under runpod-python's endpoint
base URL (``<base>/<endpoint_id>/...``): the OpenAI route (``/openai/v1/...``, forwarded
as is) and native jobs (``/runsync`` with ``{"input": {"openai_route", "openai_input"}}``,
answered ``{"id", "status", "output": [answer]}``, or ``IN_QUEUE`` first and the answer
from ``/status/<id>``). It checks the bearer key like RunPod (401 otherwise) and injects
what a serverless endpoint does to clients: 429 with ``Retry-After`` (queue full), 500,
a request left unanswered past the client's timeout, a held first request (a cold
start), and an older vLLM that ignores ``logprob_token_ids``. Only /tokenize and
/metrics are missing, as on RunPod.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


class RunPodStandIn:
    """Start with :meth:`start`; ``base_url`` is what ``runpod.endpoint_url_base`` should be."""

    def __init__(self, upstream: str, api_key: str, endpoint_id: str = "ep-standin") -> None:
        self.upstream = upstream.rstrip("/")  # the real server's root, http://127.0.0.1:PORT
        self.api_key = api_key
        self.endpoint_id = endpoint_id
        self.faults: deque[str] = deque()  # for the next scoring requests: 429, 500, timeout, queue
        self.hold_first_seconds = 0.0  # hold the next request this long (a cold start)
        self.timeout_sleep = 3.0
        self.ignore_logprob_token_ids = False
        self.log: list[dict[str, Any]] = []
        self._jobs: dict[str, Any] = {}
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

    # -- requests ---------------------------------------------------------------------------

    def scoring_requests(self) -> list[dict[str, Any]]:
        return [e for e in self.log if e.get("scoring")]

    def _handle(self, request: BaseHTTPRequestHandler, body: Any) -> None:
        auth = request.headers.get("authorization")
        entry: dict[str, Any] = {"path": request.path, "auth_ok": auth == f"Bearer {self.api_key}"}
        with self._lock:
            self.log.append(entry)
        if not entry["auth_ok"]:
            return _send(request, 401, {"error": "Unauthorized"})
        prefix = f"/v2/{self.endpoint_id}/"
        if not request.path.startswith(prefix):
            return _send(request, 404, {"error": "no such endpoint"})
        rest = request.path[len(prefix) :]
        if rest.startswith("openai/v1/"):
            return self._openai(request, entry, "/" + rest[len("openai/") :], body, native=False)
        if rest == "runsync" and isinstance(body, dict):
            job = body.get("input") or {}
            return self._openai(request, entry, job.get("openai_route", ""), job.get("openai_input"), native=True)
        if rest.startswith("status/"):
            job_id = rest[len("status/") :]
            with self._lock:
                answer = self._jobs.pop(job_id, None)
            if answer is None:
                return _send(request, 404, {"error": f"job {job_id} not found"})
            return _send(request, 200, {"id": job_id, "status": "COMPLETED", "output": [answer]})
        return _send(request, 404, {"error": "Not Found"})

    def _openai(
        self, request: BaseHTTPRequestHandler, entry: dict[str, Any], route: str, body: Any, native: bool
    ) -> None:
        scoring = route == "/v1/completions" and isinstance(body, dict) and "logprob_token_ids" in body
        entry.update(route=route, native=native, scoring=scoring)
        with self._lock:
            hold, self.hold_first_seconds = self.hold_first_seconds, 0.0
        if hold:  # the first request of a burst waits for a worker to load the model
            time.sleep(hold)
        if scoring:
            entry["prompts"] = len(body["prompt"])
            with self._lock:
                fault = self.faults.popleft() if self.faults else None
            entry["fault"] = fault
            if fault == "429":
                return _send(request, 429, {"error": "too many requests in queue"}, {"Retry-After": "1"})
            if fault == "500":
                return _send(request, 500, {"error": "worker failed"})
            if fault == "timeout":
                time.sleep(self.timeout_sleep)  # the client has given up by now
                return _send(request, 504, {"error": "gateway timeout"})
            if self.ignore_logprob_token_ids:  # an older vLLM drops fields it does not know
                body = {k: v for k, v in body.items() if k != "logprob_token_ids"}
            if native and fault == "queue":
                job_id = str(uuid.uuid4())
                answer = self._forward(route, body)[1]
                with self._lock:
                    self._jobs[job_id] = answer
                return _send(request, 200, {"id": job_id, "status": "IN_QUEUE"})
        status, answer = self._forward(route, body)
        if native:
            return _send(request, 200, {"id": str(uuid.uuid4()), "status": "COMPLETED", "output": [answer]})
        return _send(request, status, answer)

    def _forward(self, route: str, body: Any) -> tuple[int, Any]:
        url = self.upstream + route
        response = self._http.get(url) if body is None or route == "/v1/models" else self._http.post(url, json=body)
        return response.status_code, response.json()


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
