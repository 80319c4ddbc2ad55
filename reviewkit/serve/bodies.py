"""Request bodies in and answers out, each with the error that names what is wrong.

The routes read the raw body themselves rather than letting FastAPI parse it: a 1 MB body
takes tens of milliseconds to decode, parse and validate, and an answer for a thousand
restaurants as long to build, which on the event loop would stall every other request and
``/health``; here anything over :data:`INLINE_BYTES` is done on a worker thread. It also
gives each failure its own message (FastAPI answers "error parsing the body" alike for
bytes that are not UTF-8, a 5,000-digit number and nesting too deep).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

#: Bodies and answers up to this size are handled on the event loop (well under a millisecond).
INLINE_BYTES = 32_000


def invalid(loc: tuple[Any, ...], msg: str, kind: str = "value_error") -> RequestValidationError:
    """A 422 naming ``loc`` (rendered by the app's handler as ``field.path: msg``)."""
    return RequestValidationError([{"loc": loc, "msg": msg, "type": kind}])


def parse(raw: bytes, content_type: str, model: type[M], check: Callable[[Any], None] | None = None) -> M:
    """``raw`` as ``model``; 422 naming the field or the byte that is wrong.

    ``check`` sees the decoded JSON before validation (a size limit that would be slow to
    reach by validating everything first).
    """
    if "json" not in content_type:
        raise invalid(("body",), "send JSON with 'Content-Type: application/json'", "content_type")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid(
            ("body",), f"not UTF-8: byte {raw[exc.start]:#04x} at position {exc.start}", "json_invalid"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise invalid(("body",), f"not valid JSON ({exc.msg} at character {exc.pos})", "json_invalid") from None
    except RecursionError:
        raise invalid(("body",), "cannot be read: nested too deeply", "json_invalid") from None
    except ValueError as exc:  # an integer of more digits than Python converts (4,300)
        raise invalid(("body",), f"cannot be read: {str(exc).split(';')[0]}", "json_invalid") from None
    if check is not None:
        check(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [
                {"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
        ) from None
    except RecursionError:
        raise invalid(("body",), "cannot be read: nested too deeply", "json_invalid") from None


def count_limit(data: Any, key: str, limit: int, what: str) -> None:
    """413 when ``data[key]`` is a list longer than ``limit`` (checked before validating it)."""
    if isinstance(data, dict) and isinstance(data.get(key), list) and len(data[key]) > limit:
        raise HTTPException(413, f"{len(data[key])} {what} is over the limit of {limit} per request")


def encode(answer: Any) -> bytes:
    """The JSON of an answer (its texts are valid Unicode: the models refuse others)."""
    return json.dumps(answer, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


async def off_loop(big: bool, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, on a worker thread when ``big`` (a blocking call would stall the event loop)."""
    return await asyncio.to_thread(fn, *args) if big else fn(*args)
