"""What every request goes through before the routes: auth, refusal when the server cannot take
work, the size limit and read timeout, activity, one log line.

A plain ASGI middleware rather than FastAPI dependencies, so that it also covers
``/docs``, unknown paths and bodies FastAPI would otherwise read whole: an
over-limit body is refused from its ``Content-Length`` (or once the bytes read pass
the limit) before it is parsed, and a request the server cannot take (a full queue, a
dead engine) is refused before its body is read at all. A request counts as work (``/health``
busy) only once its whole body has arrived, and a body that does not arrive within the
read timeout gets 408: a client that sends headers and goes quiet pins nothing.
"""

from __future__ import annotations

import asyncio
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
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def printable(text: str) -> str:
    """``text`` as is, or escaped (``repr``) if it holds a line break or a control character:
    a client's path or id must never forge a log line."""
    return text if text.isprintable() else repr(text)


#: Says why the server refuses work before reading a request (None: it does not): (reason, Retry-After).
Admit = Callable[[], "tuple[str, int] | None"]


class ServeMiddleware:
    """Bearer auth (all paths but ``/health``), refusal before the body when the server cannot take
    work, body limit and read timeout, activity tracking, one log line per request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        max_body_bytes: int,
        read_timeout_s: float,
        activity: Activity,
        admit: Admit,
    ) -> None:
        self.app = app
        self._key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.read_timeout_s = read_timeout_s
        self.activity = activity
        self.admit = admit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "")
        if path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: dict[str, int | None] = {"code": None}

        async def send_tracking(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        scope.setdefault("state", {})
        tracked = path.startswith("/api/")
        refusal = self.admit() if tracked else None
        if not self._authorized(scope):
            scope["state"]["summary"] = "unauthorized"
            await _send_json(
                send_tracking,
                401,
                {"detail": "missing or wrong API key: send 'Authorization: Bearer <key>'"},
                [(b"www-authenticate", b"Bearer")],
            )
        elif refusal is not None:  # before the body: a flood costs no memory
            reason, retry_after = refusal
            scope["state"]["summary"] = reason
            await _send_json(
                send_tracking,
                503,
                {"detail": f"{reason}; retry in {retry_after} s"},
                [(b"retry-after", str(retry_after).encode())],
            )
        else:
            try:
                await self._call_limited(scope, receive, send_tracking, tracked)
            finally:
                if tracked and "admitted" in scope["state"]:
                    self.activity.end(status["code"] or 500)
        summary = scope["state"].get("summary", "")
        code = status["code"] or (499 if scope["state"].get("disconnected") else 500)
        log.info(
            "%s %s %d%s (%.2f s)",
            printable(method),
            printable(path),
            code,
            f" {printable(summary)}" if summary else "",
            time.perf_counter() - started,
        )

    def _authorized(self, scope: Scope) -> bool:
        if self._key is None:
            return True
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._key)
        return False

    async def _call_limited(self, scope: Scope, receive: Receive, send: Send, tracked: bool) -> None:
        """Read the body up to the size limit (413) within the read timeout (408), then count the
        request as work and hand it to the app."""
        limit = self.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.strip().isdigit() and int(value) > limit:
                await self._refuse(scope, send, 413, f"request body over the limit of {limit} bytes")
                return
        replay = receive
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            body = await self._read_body(scope, receive, send)
            if body is None:
                return
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

        scope["state"]["admitted"] = time.monotonic()  # work from here on: the request deadline starts
        if tracked:
            self.activity.begin()
        await self.app(scope, replay, send)

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None once the request has been answered (413, 408) or abandoned."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout_s
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                await self._refuse(
                    scope, send, 408, f"the request body did not arrive within {self.read_timeout_s:g} s", close=True
                )
                return None
            if message["type"] != "http.request":
                scope["state"]["summary"] = "the client hung up before sending its whole body"
                scope["state"]["disconnected"] = True
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                await self._refuse(scope, send, 413, f"request body over the limit of {self.max_body_bytes} bytes")
                return None
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, detail: str, close: bool = False) -> None:
        scope["state"]["summary"] = detail
        await _send_json(send, status, {"detail": detail}, [(b"connection", b"close")] if close else [])
