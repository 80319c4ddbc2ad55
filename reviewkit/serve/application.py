"""The FastAPI app: the seed's routes over the loaded engine, batched, checked, and safe by default.

``app(engine)`` builds a new app around an engine (the process's, loaded at start-up,
when none is given). Every route answers bad input with a 4xx naming the problem, an
engine failure or a full queue with a 503 and ``Retry-After``, a request past its deadline
with a 504; the app keeps serving once the engine answers again, unless an in-process
engine died or hung (:mod:`.liveness`): then every waiting request gets 503, ``/health``
answers 503 ``engine_dead`` and the server exits for a supervisor to restart it.
The limits are :class:`~reviewkit.serve.limits.Limits` (README: "Limits and failure behaviour").
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from reviewkit._version import __version__
from reviewkit.aspect_prompts import ASPECTS, Aspect
from reviewkit.cache import ResultCache
from reviewkit.engines.base import Engine
from reviewkit.process_engine import default_engine
from reviewkit.prompts import DEFAULT_LABELS, PromptTemplate
from reviewkit.seed_api import restaurant_of
from reviewkit.serve.aspect_bodies import batch_aspects, build_results, unscorable
from reviewkit.serve.batcher import Answer, Batcher, EngineUnavailable, QueueFull, UnscorableReviews
from reviewkit.serve.bodies import INLINE_BYTES, count_limit, encode, invalid, off_loop, parse
from reviewkit.serve.limits import Limits
from reviewkit.serve.liveness import EXIT_ENGINE_DEAD, EngineWatch
from reviewkit.serve.middleware import Activity, ServeMiddleware
from reviewkit.serve.models import AnalyzeRequest, BatchRequest, Health, check_labels, response_models

API_KEY_ENV = "REVIEWKIT_API_KEY"
ANALYZE_PATH = "/api/v1/sentiment/analyze"
BATCH_PATH = "/api/v1/sentiment/analyze/batch"


@dataclass
class ServeState:
    """What the routes share; ``app.state.reviewkit`` (tests, the runner and embedding code read it)."""

    engine: Engine | None
    batcher: Batcher
    activity: Activity
    limits: Limits
    started: float
    watch: EngineWatch | None = None
    #: Set by :func:`reviewkit.serve.run`: ends the server with this exit status.
    request_exit: Callable[[int], None] | None = None
    exit_code: int = 0

    @property
    def max_reviews(self) -> int:
        return self.limits.max_reviews

    @property
    def idle_after_s(self) -> float:
        return self.limits.idle_after_s

    @property
    def retry_after_s(self) -> int:
        return self.limits.retry_after_s

    @property
    def dead(self) -> str | None:
        return self.watch.dead if self.watch is not None else None


def app(
    engine: Engine | None = None,
    *,
    load_engine: bool = True,
    api_key: str | None = None,
    labels: Sequence[str] = DEFAULT_LABELS,
    prompt: PromptTemplate | None = None,
    cache: bool | ResultCache = True,
    limits: Limits | None = None,
    **overrides: Any,
) -> FastAPI:
    """The seed's API as a FastAPI app (serve it with :func:`reviewkit.serve.run` or any ASGI server).

    Args:
        engine: the engine to score with; None means the process's engine
            (the loaded one, else ``reviewkit.load()``), loaded at start-up
            before any request is accepted, unless ``load_engine=False`` (then requests
            that need the engine get 503: for tests of the validation paths).
        api_key: require ``Authorization: Bearer <api_key>`` on every route but ``/health``;
            None reads ``$REVIEWKIT_API_KEY`` (unset: no auth), ``""`` turns auth off.
        labels, prompt, cache: as for :func:`reviewkit.score_texts`; the default cache is
            the one the notebook API uses.
        limits: the server's :class:`~reviewkit.serve.limits.Limits`; ``overrides`` set
            single ones (``max_reviews=50``, ``read_timeout_s=5``, ...).
    """
    labels = check_labels(labels)
    limits = Limits(**{**(vars(limits) if limits is not None else {}), **overrides})
    key = os.environ.get(API_KEY_ENV) if api_key is None else api_key
    batcher = Batcher(
        engine,
        labels=labels,
        prompt=prompt,
        cache=cache,
        wait_s=limits.batch_wait_ms / 1000,
        max_batch_texts=limits.max_batch_reviews,
        max_queue_texts=limits.max_queue_reviews,
        queue_wait_s=limits.queue_wait_s,
    )
    state = ServeState(engine=engine, batcher=batcher, activity=Activity(), limits=limits, started=time.monotonic())

    def engine_dead(reason: str) -> None:
        state.batcher.fail_all(f"the engine is dead ({reason}); the server is restarting")
        state.exit_code = EXIT_ENGINE_DEAD
        if state.request_exit is not None:
            state.request_exit(EXIT_ENGINE_DEAD)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if state.engine is None and load_engine:
            # In the server's main thread: vLLM sets signal handlers as it starts.
            state.engine = state.batcher.engine = default_engine()
        state.batcher.start()
        if state.engine is not None:
            state.watch = state.batcher.watch = EngineWatch(
                state.engine, limits, on_dead=engine_dead, on_stuck=state.batcher.fail_running
            )
            state.watch.start()
        yield
        if state.watch is not None:
            await state.watch.stop()
        await state.batcher.stop()  # uvicorn has already waited for the requests in flight

    def count_limits(data: Any, key: str, limit: int, what: str) -> None:
        count_limit(data, key, limit, what)
        if isinstance(data, dict) and data.get("aspects") is True:
            data = {"aspects": list(ASPECTS)}  # true: all of them
        count_limit(data, "aspects", limits.max_aspects, "aspects")

    def admit() -> tuple[str, int] | None:
        if state.dead is not None:
            return f"the engine is dead ({state.dead}); the server is restarting", limits.retry_after_s
        if state.batcher.full():
            return state.batcher.full_reason(), limits.retry_after_s
        return None

    single, batch = response_models(labels)
    api = FastAPI(
        title="reviewkit",
        version=__version__,
        lifespan=lifespan,
        description="Sentiment of restaurant reviews: the seed project's API, served by reviewkit.",
    )
    api.state.reviewkit = state
    api.add_middleware(
        ServeMiddleware,
        api_key=key or None,
        max_body_bytes=limits.max_body_bytes,
        read_timeout_s=limits.read_timeout_s,
        activity=state.activity,
        admit=admit,
    )
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    errors = {
        408: {"description": "the body did not arrive within the read timeout"},
        413: {"description": "over the review, restaurant or byte limit"},
        422: {"description": "invalid input; `error` names each field"},
        503: {"description": "engine unavailable or queue full; retry after Retry-After seconds"},
        504: {"description": "not answered within the request timeout; retry after Retry-After seconds"},
    }

    @api.post(
        ANALYZE_PATH,
        response_model=single,
        summary="Sentiment of one restaurant's reviews",
        responses=errors,
        openapi_extra=_body_schema(AnalyzeRequest),
    )
    async def analyze(request: Request) -> Any:
        raw = await request.body()
        body = await off_loop(
            len(raw) > INLINE_BYTES,
            parse,
            raw,
            request.headers.get("content-type", ""),
            AnalyzeRequest,
            lambda data: count_limits(data, "reviews", limits.max_reviews, "reviews"),
        )
        restaurant_id, payloads = _restaurant(body, ("body",))
        scored = await _score(
            state,
            request,
            [p["content"] for p in payloads],
            [("body", "reviews", i, "content") for i in range(len(payloads))],
            body.aspects,
        )
        if isinstance(scored, Response):
            return scored
        [out] = await off_loop(len(payloads) > 200, build_results, [(restaurant_id, payloads)], *scored)
        request.state.summary = f"restaurant_id={restaurant_id}: {_counts([out], labels)}"
        return Response(await off_loop(len(payloads) > 200, encode, out), media_type="application/json")

    @api.post(
        BATCH_PATH,
        response_model=batch,
        summary="Sentiment of several restaurants' reviews in one call",
        responses=errors,
        openapi_extra=_body_schema(BatchRequest),
    )
    async def analyze_batch(request: Request) -> Any:
        raw = await request.body()
        body = await off_loop(
            len(raw) > INLINE_BYTES,
            parse,
            raw,
            request.headers.get("content-type", ""),
            BatchRequest,
            lambda data: count_limits(data, "restaurants", limits.max_restaurants, "restaurants"),
        )
        _check_size(state, sum(len(r.reviews) for r in body.restaurants))
        aspects = batch_aspects(body)
        groups = [_restaurant(r, ("body", "restaurants", i)) for i, r in enumerate(body.restaurants)]
        where = [
            ("body", "restaurants", r, "reviews", i, "content")
            for r, (_, payloads) in enumerate(groups)
            for i in range(len(payloads))
        ]
        texts = [p["content"] for _, payloads in groups for p in payloads]
        scored = await _score(state, request, texts, where, aspects)
        if isinstance(scored, Response):
            return scored
        results = await off_loop(len(texts) > 200, build_results, groups, *scored)
        start = len(texts)
        request.state.summary = f"{len(results)} restaurants: {_counts(results, labels)}"
        answer = {"results": results, "total_count": start}
        return Response(await off_loop(start + len(results) > 200, encode, answer), media_type="application/json")

    @api.get(
        "/health",
        response_model=Health,
        summary="Liveness and activity, for the idle watchdog",
        responses={503: {"description": "the engine is dead; the server is exiting to be restarted"}},
    )
    async def health() -> Any:
        # Reads what the liveness watch measured: no engine call, no thread, nothing billed.
        watch, last = state.watch, state.activity.last_activity
        detail = state.dead or (watch.error if watch is not None else None) or state.batcher.last_error
        status = (
            "no_engine" if state.engine is None else "engine_dead" if state.dead else "engine_error" if detail else "ok"
        )
        out = Health(
            status=status,
            detail=detail,
            busy=state.dead is None and state.activity.busy(limits.idle_after_s),
            last_activity=None if last is None else datetime.fromtimestamp(last, timezone.utc).isoformat(),
            model=None if state.engine is None else state.engine.model_id,
            engine_loaded=watch is not None and watch.alive,
            requests_in_flight=state.activity.in_flight,
            requests_served=state.activity.served,
            requests_failed=state.activity.failed,
            engine_batches=state.batcher.batches,
            idle_after_s=limits.idle_after_s,
            uptime_s=round(time.monotonic() - state.started, 3),
            queued_reviews=state.batcher.queued_texts,
            queue_limit=state.batcher.queue_limit,
        )
        return JSONResponse(out.model_dump(), status_code=503 if state.dead else 200)

    schemas = {m.__name__: m for m in (AnalyzeRequest, BatchRequest)}

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = get_openapi(
                title=api.title, version=api.version, description=api.description, routes=api.routes
            )
            found = api.openapi_schema.setdefault("components", {}).setdefault("schemas", {})
            for name, model in schemas.items():
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                found.update(schema.pop("$defs", {}))
                found[name] = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    return api


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The request body in the OpenAPI docs (the routes read it themselves: :mod:`.bodies`)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def _check_size(state: ServeState, reviews: int) -> None:
    if reviews > state.limits.max_reviews:
        raise HTTPException(413, f"{reviews} reviews is over the limit of {state.limits.max_reviews} per request")


def _restaurant(body: AnalyzeRequest, loc: tuple[Any, ...]) -> tuple[Any, list[dict[str, Any]]]:
    """The restaurant id and the review payloads; 422 when the reviews name other restaurants."""
    payloads = [r.model_dump() for r in body.reviews]
    if body.restaurant_id is not None:
        for i, p in enumerate(payloads):
            if p["restaurant_id"] is not None and str(p["restaurant_id"]) != str(body.restaurant_id):
                raise invalid(
                    (*loc, "reviews", i, "restaurant_id"),
                    f"review of restaurant {p['restaurant_id']!r} in a request for restaurant "
                    f"{body.restaurant_id!r}: send each restaurant's reviews separately",
                )
        return body.restaurant_id, payloads
    try:
        return restaurant_of(payloads), payloads
    except ValueError as exc:
        raise invalid((*loc, "restaurant_id"), str(exc)) from exc


async def _score(
    state: ServeState, request: Request, texts: list[Any], where: list[tuple[Any, ...]], aspects: tuple[Aspect, ...]
) -> Answer | Response:
    """The batcher's scores (and ``aspects``), or the answer that says why not (503, 504, 422 naming
    the reviews that cannot be scored: ``where`` is each text's field)."""
    retry = {"Retry-After": str(state.limits.retry_after_s)}
    admitted = request.scope.get("state", {}).get("admitted", time.monotonic())
    remaining = state.limits.request_timeout_s - (time.monotonic() - admitted)
    try:
        return await asyncio.wait_for(state.batcher.analyze(texts, aspects), max(0.0, remaining))
    except EngineUnavailable as exc:
        request.state.summary = str(exc)[:200]
        why = str(exc) if isinstance(exc, QueueFull) else f"engine unavailable ({exc})"
        return JSONResponse(
            {"detail": f"{why}; retry in {state.limits.retry_after_s} s"}, status_code=503, headers=retry
        )
    except asyncio.TimeoutError:
        detail = (
            f"not answered within the request timeout of {state.limits.request_timeout_s:g} s (the "
            f"server is overloaded); retry in {state.limits.retry_after_s} s"
        )
        request.state.summary = detail
        return JSONResponse({"detail": detail}, status_code=504, headers=retry)
    except UnscorableReviews as exc:
        raise unscorable(exc.errors, where) from None


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
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]
    message = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in errors)
    request.state.summary = message[:200]
    return JSONResponse({"detail": errors, "error": message}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> Any:
    assert isinstance(exc, StarletteHTTPException)
    request.state.summary = str(exc.detail)[:200]
    return await http_exception_handler(request, exc)
