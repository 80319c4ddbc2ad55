"""The FastAPI app: the seed's routes over the loaded engine, batched, checked, and safe by default.

``app(engine)`` builds a new app around an engine (the process's, loaded at start-up,
when none is given). Every route answers bad input with a 4xx naming the problem and
an engine failure with a 503 and ``Retry-After``; the app keeps serving once the
engine answers again.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from reviewkit._version import __version__
from reviewkit.cache import ResultCache
from reviewkit.engines.base import Engine
from reviewkit.process_engine import default_engine
from reviewkit.prompts import DEFAULT_LABELS, PromptTemplate
from reviewkit.scoring import ScoredTexts
from reviewkit.seed_api import restaurant_of, restaurant_result
from reviewkit.serve.batcher import Batcher, EngineUnavailable
from reviewkit.serve.middleware import Activity, ServeMiddleware
from reviewkit.serve.models import AnalyzeRequest, BatchRequest, Health, check_labels, response_models

API_KEY_ENV = "REVIEWKIT_API_KEY"
ANALYZE_PATH = "/api/v1/sentiment/analyze"
BATCH_PATH = "/api/v1/sentiment/analyze/batch"
_BODY_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's 400 for a body that is not UTF-8 JSON


@dataclass
class ServeState:
    """What the routes share; ``app.state.reviewkit`` (tests and embedding code read it)."""

    engine: Engine | None
    batcher: Batcher
    activity: Activity
    max_reviews: int
    idle_after_s: float
    retry_after_s: int
    started: float


def app(engine: Engine | None = None, *, load_engine: bool = True, api_key: str | None = None,
        max_reviews: int = 1000, max_body_bytes: int = 1_000_000, batch_wait_ms: float = 5.0,
        max_batch_reviews: int = 1024, idle_after_s: float = 10.0, retry_after_s: int = 5,
        labels: Sequence[str] = DEFAULT_LABELS, prompt: PromptTemplate | None = None,
        cache: bool | ResultCache = True) -> FastAPI:
    """The seed's API as a FastAPI app (serve it with :func:`reviewkit.serve.run` or any ASGI server).

    Args:
        engine: the engine to score with; None means the process's engine
            (the loaded one, else ``reviewkit.load()``), loaded at start-up
            before any request is accepted, unless ``load_engine=False`` (then requests
            that need the engine get 503: for tests of the validation paths).
        api_key: require ``Authorization: Bearer <api_key>`` on every route but ``/health``;
            None reads ``$REVIEWKIT_API_KEY`` (unset: no auth), ``""`` turns auth off.
        max_reviews, max_body_bytes: larger requests get 413 (the batch route counts
            the reviews of all its restaurants).
        batch_wait_ms: how long the first request of a batch waits for others to join.
        max_batch_reviews: no more reviews than this are gathered into one engine call.
        idle_after_s: ``/health`` reads busy until this long after the last request.
        retry_after_s: the ``Retry-After`` of a 503.
        labels, prompt, cache: as for :func:`reviewkit.score_texts`; the default cache is
            the one the notebook API uses.
    """
    labels = check_labels(labels)
    for name, value in (("max_reviews", max_reviews), ("max_body_bytes", max_body_bytes),
                        ("max_batch_reviews", max_batch_reviews), ("retry_after_s", retry_after_s)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if batch_wait_ms < 0 or idle_after_s < 0:
        raise ValueError("batch_wait_ms and idle_after_s must not be negative")
    key = os.environ.get(API_KEY_ENV) if api_key is None else api_key
    state = ServeState(engine=engine, activity=Activity(), max_reviews=max_reviews, idle_after_s=idle_after_s,
                       retry_after_s=retry_after_s, started=time.monotonic(),
                       batcher=Batcher(engine, labels=labels, prompt=prompt, cache=cache,
                                       wait_s=batch_wait_ms / 1000, max_batch_texts=max_batch_reviews))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if state.engine is None and load_engine:
            # In the server's main thread: vLLM sets signal handlers as it starts.
            state.engine = state.batcher.engine = default_engine()
        state.batcher.start()
        yield
        await state.batcher.stop()  # uvicorn has already waited for the requests in flight

    single, batch = response_models(labels)
    api = FastAPI(title="reviewkit", version=__version__, lifespan=lifespan,
                  description="Sentiment of restaurant reviews: the seed project's API, served by reviewkit.")
    api.state.reviewkit = state
    api.add_middleware(ServeMiddleware, api_key=key or None, max_body_bytes=max_body_bytes,
                       activity=state.activity)
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(StarletteHTTPException, _http_error)

    @api.post(ANALYZE_PATH, response_model=single, summary="Sentiment of one restaurant's reviews",
              responses={413: {"description": "over the review or byte limit"},
                         503: {"description": "engine unavailable; retry after Retry-After seconds"}})
    async def analyze(body: AnalyzeRequest, request: Request) -> Any:
        _check_size(state, len(body.reviews))
        restaurant_id, payloads = _restaurant(body, ("body",))
        scored = await _score(state, [p["content"] for p in payloads])
        if isinstance(scored, JSONResponse):
            return scored
        out = restaurant_result(restaurant_id, payloads, scored)
        request.state.summary = f"restaurant_id={restaurant_id}: {_counts([out], labels)}"
        return out

    @api.post(BATCH_PATH, response_model=batch, summary="Sentiment of several restaurants' reviews in one call",
              responses={413: {"description": "over the review or byte limit"},
                         503: {"description": "engine unavailable; retry after Retry-After seconds"}})
    async def analyze_batch(body: BatchRequest, request: Request) -> Any:
        _check_size(state, sum(len(r.reviews) for r in body.restaurants))
        groups = [_restaurant(r, ("body", "restaurants", i)) for i, r in enumerate(body.restaurants)]
        scored = await _score(state, [p["content"] for _, payloads in groups for p in payloads])
        if isinstance(scored, JSONResponse):
            return scored
        results, start = [], 0
        for restaurant_id, payloads in groups:
            part = ScoredTexts(scored.labels, scored.probs[start:start + len(payloads)], scored.stats)
            results.append(restaurant_result(restaurant_id, payloads, part))
            start += len(payloads)
        request.state.summary = f"{len(results)} restaurants: {_counts(results, labels)}"
        return {"results": results, "total_count": start}

    @api.get("/health", response_model=Health, summary="Liveness and activity, for the idle watchdog")
    async def health() -> Any:
        last = state.activity.last_activity
        return Health(
            status="no_engine" if state.engine is None else "engine_error" if state.batcher.last_error else "ok",
            busy=state.activity.busy(state.idle_after_s),
            last_activity=None if last is None else datetime.fromtimestamp(last, timezone.utc).isoformat(),
            model=None if state.engine is None else state.engine.model_id,
            engine_loaded=await _alive(state.engine),
            requests_in_flight=state.activity.in_flight, requests_served=state.activity.served,
            requests_failed=state.activity.failed, engine_batches=state.batcher.batches,
            idle_after_s=state.idle_after_s, uptime_s=round(time.monotonic() - state.started, 3))

    return api


def _check_size(state: ServeState, reviews: int) -> None:
    if reviews > state.max_reviews:
        raise HTTPException(413, f"{reviews} reviews is over the limit of {state.max_reviews} per request")


def _restaurant(body: AnalyzeRequest, loc: tuple[Any, ...]) -> tuple[Any, list[dict[str, Any]]]:
    """The restaurant id and the review payloads; 422 when the reviews name other restaurants."""
    payloads = [r.model_dump() for r in body.reviews]
    if body.restaurant_id is not None:
        for i, p in enumerate(payloads):
            if p["restaurant_id"] is not None and str(p["restaurant_id"]) != str(body.restaurant_id):
                raise _invalid((*loc, "reviews", i, "restaurant_id"),
                               f"review of restaurant {p['restaurant_id']!r} in a request for restaurant "
                               f"{body.restaurant_id!r}: send each restaurant's reviews separately")
        return body.restaurant_id, payloads
    try:
        return restaurant_of(payloads), payloads
    except ValueError as exc:
        raise _invalid((*loc, "restaurant_id"), str(exc)) from exc


def _invalid(loc: tuple[Any, ...], msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": loc, "msg": msg, "type": "value_error"}])


async def _score(state: ServeState, texts: list[Any]) -> Any:
    try:
        return await state.batcher.score(texts)
    except EngineUnavailable as exc:
        return JSONResponse({"detail": f"engine unavailable ({exc}); retry in {state.retry_after_s} s"},
                            status_code=503, headers={"Retry-After": str(state.retry_after_s)})


async def _alive(engine: Engine | None) -> bool:
    if engine is None:
        return False
    try:  # a remote engine's check may go over the network: never hold /health up for it
        await asyncio.wait_for(asyncio.to_thread(engine.check_alive), 2.0)
    except Exception:  # noqa: BLE001 - any failure to answer is "not loaded"
        return False
    return True


def _counts(results: list[dict[str, Any]], labels: Sequence[str]) -> str:
    """The seed's log summary: '10 reviews, positive 7 (70%), negative 3 (30%), unlabelled 0'."""
    total = sum(r["total_count"] for r in results)
    parts = []
    for label in labels:
        n = sum(r[f"{label}_count"] for r in results)
        parts.append(f"{label} {n} ({round(100 * n / total) if total else 0}%)")
    unlabelled = sum(r["unlabelled_count"] for r in results)
    return f"{total} review{'' if total == 1 else 's'}, " + ", ".join(parts) + f", unlabelled {unlabelled}"


def _where(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each field; the offending input is not echoed (it may be huge, or NaN)."""
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in exc.errors()]
    for error, raw in zip(errors, exc.errors(), strict=True):
        if error["type"] == "json_invalid" and raw.get("ctx"):
            where = f" at character {error['loc'][1]}" if len(error["loc"]) > 1 else ""
            error["loc"], error["msg"] = ["body"], f"not valid JSON ({raw['ctx'].get('error')}{where})"
    if [e["loc"] for e in errors] == [["body"]] and "json" not in request.headers.get("content-type", ""):
        errors[0]["msg"] += " (send JSON with 'Content-Type: application/json')"
    message = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in errors)
    request.state.summary = message[:200]
    return JSONResponse({"detail": errors, "error": message}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> Any:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _BODY_PARSE_ERROR:
        return await _validation_error(request, RequestValidationError(
            [{"loc": ("body",), "msg": "not UTF-8 encoded JSON", "type": "json_invalid"}]))
    request.state.summary = str(exc.detail)[:200]
    return await http_exception_handler(request, exc)
