"""What every request goes through before the routes: auth, the size limit, activity, one log line.

A plain ASGI middleware rather than FastAPI dependencies, so that it also covers
``/docs``, unknown paths and bodies FastAPI would otherwise read whole: an
over-limit body is refused from its ``Content-Length`` (or once the bytes read pass
the limit) before it is parsed.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("reviewkit.serve")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = ("/health",)


@dataclass
class Activity:
    """Analyze requests in flight and when the last one started or ended (for ``/health``)."""

    in_flight: int = 0
    served: int = 0
    failed: int = 0
    last_activity: float | None = None  # epoch seconds
    last_end: float = field(default=float("-inf"))  # monotonic seconds

    def begin(self) -> None:
        self.in_flight += 1
        self.last_activity = time.time()

    def end(self, status: int) -> None:
        self.in_flight -= 1
        self.last_activity = time.time()
        self.last_end = time.monotonic()
        if status < 400:
            self.served += 1
        else:
            self.failed += 1

    def busy(self, idle_after_s: float) -> bool:
        return self.in_flight > 0 or time.monotonic() - self.last_end < idle_after_s


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()), *headers]})
    await send({"type": "http.response.body", "body": payload})


class ServeMiddleware:
    """Bearer auth (all paths but ``/health``), body limit, activity tracking, one log line per request."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int, activity: Activity) -> None:
        self.app = app
        self._key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.activity = activity

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "")
        if path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_tracking(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        scope.setdefault("state", {})
        tracked = path.startswith("/api/")
        if not self._authorized(scope):
            scope["state"]["summary"] = "unauthorized"
            await _send_json(send_tracking, 401, {"detail": "missing or wrong API key: send "
                                                            "'Authorization: Bearer <key>'"},
                             [(b"www-authenticate", b"Bearer")])
        else:
            if tracked:
                self.activity.begin()
            try:
                await self._call_limited(scope, receive, send_tracking)
            finally:
                if tracked:
                    self.activity.end(status["code"])
        summary = scope["state"].get("summary", "")
        log.info("%s %s %d%s (%.2f s)", method, path, status["code"], f" {summary}" if summary else "",
                 time.perf_counter() - started)

    def _authorized(self, scope: Scope) -> bool:
        if self._key is None:
            return True
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._key)
        return False

    async def _call_limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the body up to the limit (413 past it), then hand it to the app."""
        limit = self.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.strip().isdigit() and int(value) > limit:
                await self._too_large(scope, send)
                return
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                scope["state"]["summary"] = "client disconnected before sending the body"
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await self._too_large(scope, send)
                return
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        detail = f"request body over the limit of {self.max_body_bytes} bytes"
        scope["state"]["summary"] = detail
        await _send_json(send, 413, {"detail": detail})
