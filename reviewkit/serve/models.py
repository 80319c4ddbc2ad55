"""Request and response bodies of the seed's API, as pydantic models.

The request side is the seed's: a restaurant id and a list of review payloads, of
which only ``id``, ``restaurant_id`` and ``content`` are read (the seed's clients send
more fields; they are accepted and ignored). The response keys depend on the label
set (``neutral_count`` with three classes), so the response models are built per app.
``aspects`` (optional) asks for per-review aspects and a per-restaurant aspect summary
(:mod:`.aspect_bodies`); without it the answer is the seed's.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from reviewkit.scoring import unicode_problem
from reviewkit.serve.aspect_bodies import ASPECTS_SCHEMA, parse_aspects


def _valid_unicode(value: str) -> str:
    """Refuse a lone surrogate (JSON ``"\\ud800"``): it cannot be scored, cached or echoed back as UTF-8."""
    problem = unicode_problem(value)
    if problem is not None:
        raise PydanticCustomError("unicode_invalid", problem)
    return value


def _id(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        shown = json.dumps(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise PydanticCustomError("id_type", "an id is an integer or a string, not {value}", {"value": shown})
    return _valid_unicode(value) if isinstance(value, str) else value


def _aspects(value: Any) -> Any:
    try:
        return parse_aspects(value)
    except ValueError as exc:
        raise PydanticCustomError("aspects_invalid", "{why}", {"why": str(exc)}) from None


#: Text the server can score and answer with: valid Unicode (422 naming the field otherwise).
Text = Annotated[str, AfterValidator(_valid_unicode)]
#: An id: an integer or a string (``true`` or ``1.5`` is refused rather than read as 1).
Id = Annotated[int | str, PlainValidator(_id), WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string"}]})]
#: ``true``, ``false``, null, or a list of built-in names and custom ``{name, ko, en, words}``
#: aspects; validated into a tuple of :class:`~reviewkit.Aspect` (() for none).
Aspects = Annotated[Any, PlainValidator(_aspects), WithJsonSchema(ASPECTS_SCHEMA)]
_ASPECTS_HELP = (
    "true for taste, service, price, portion and wait (맛, 서비스, 가격, 양, 웨이팅), or a list of those "
    'names and custom aspects {"name": "parking", "ko": "주차", "en": "parking", "words": ["주차", "parking"]} '
    "(words: literal words that mark a mention; default ko and en). Each review then gains 'aspects' "
    "and the answer 'aspect_summary'; false or left out: the seed's answer, unchanged"
)
_LABEL = re.compile(r"^[a-z][a-z0-9_]*$")


class Review(BaseModel):
    """One review payload; fields other than these three are ignored."""

    model_config = ConfigDict(extra="ignore")

    id: Id | None = Field(default=None, description="the review's id, echoed in the answer")
    restaurant_id: Id | None = Field(default=None, description="must match the request's, if both are given")
    content: Text | None = Field(
        description="the review text; null, empty, blank or NaN is counted as unlabelled, without a model call"
    )

    @field_validator("content", mode="before")
    @classmethod
    def _nan_is_missing(cls, value: Any) -> Any:
        # Python's and JavaScript's JSON writers emit a bare NaN for a missing pandas value.
        return None if isinstance(value, float) and math.isnan(value) else value


class AnalyzeRequest(BaseModel):
    """The seed's ``POST /api/v1/sentiment/analyze`` body."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [{"restaurant_id": 1, "reviews": [{"id": 1, "restaurant_id": 1, "content": "맛있어요!"}]}]
        },
    )

    restaurant_id: Id | None = Field(
        default=None, description="the restaurant; if left out, the one every review names"
    )
    reviews: list[Review]
    aspects: Aspects = Field(default=(), description=_ASPECTS_HELP)


class BatchRequest(BaseModel):
    """Several restaurants in one call; answered in the same order."""

    model_config = ConfigDict(extra="ignore")

    restaurants: list[AnalyzeRequest]
    aspects: Aspects = Field(default=(), description=_ASPECTS_HELP + " (for every restaurant of the batch)")


class AspectResult(BaseModel):
    label: str | None = Field(
        description="positive, negative or none (not mentioned); null when the review had no text"
    )
    score: float | None = Field(description="calibrated probability of positive, for a mentioned aspect; else null")


class ReviewResult(BaseModel):
    id: Id | None = None
    sentiment: str | None = Field(description="the label; null when the review had no text")
    sentiment_score: float | None = Field(
        description="calibrated probability of 'positive' (of the first label without one); null without text"
    )
    aspects: dict[str, AspectResult] | None = Field(default=None, description="only when the request asked for aspects")


class Health(BaseModel):
    """``GET /health``: what the idle watchdog's ``--health-url`` reads (``busy``, ``last_activity``)."""

    status: str = Field(
        description="ok; no_engine (not loaded); engine_error (the last engine call or check "
        "failed); engine_dead (answered with 503: the server is exiting to be restarted)"
    )
    busy: bool = Field(
        description="requests in flight, or one finished less than idle_after_s ago; never with a dead engine"
    )
    last_activity: str | None = Field(description="ISO 8601 UTC time of the last analyze request, null if none")
    model: str | None
    engine_loaded: bool
    requests_in_flight: int
    requests_served: int
    requests_failed: int
    engine_batches: int = Field(description="engine calls made; fewer than requests when requests were batched")
    idle_after_s: float
    uptime_s: float
    detail: str | None = Field(default=None, description="why the status is engine_error or engine_dead")
    queued_reviews: int = Field(default=0, description="reviews waiting for the engine")
    queue_limit: int | None = Field(default=None, description="over this many queued reviews a request gets 503")


def check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    """Labels become response keys (``<label>_count``): lower-case identifiers only."""
    if isinstance(labels, str) or not labels:
        raise ValueError(f"labels must be a non-empty sequence of names, got {labels!r}")
    bad = [label for label in labels if not isinstance(label, str) or not _LABEL.match(label)]
    if bad:
        raise ValueError(f"labels {bad!r} cannot be response keys: use lower-case letters, digits and _")
    return tuple(labels)


def response_models(labels: Sequence[str]) -> tuple[type[BaseModel], type[BaseModel]]:
    """The single and batch response models for ``labels``."""
    fields: dict[str, Any] = {"restaurant_id": (Id | None, None)}
    fields.update({f"{label}_count": (int, ...) for label in labels})
    fields["total_count"] = (int, ...)
    fields.update({f"{label}_ratio": (int, Field(description="whole percent of total_count")) for label in labels})
    fields["unlabelled_count"] = (int, Field(description="reviews without text"))
    fields["reviews"] = (list[ReviewResult], ...)
    fields["aspect_summary"] = (
        dict[str, Any] | None,
        Field(
            default=None,
            description="only when the request asked for aspects: per aspect {mentions, positive, negative, "
            "positive_share (null without mentions)}, and top_negative_aspect (the aspect with the most "
            "negative mentions, null when none is negative)",
        ),
    )
    single = create_model("AnalyzeResponse", **fields)
    batch = create_model("BatchResponse", results=(list[single], ...), total_count=(int, ...))
    return single, batch
