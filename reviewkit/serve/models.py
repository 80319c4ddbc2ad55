"""Request and response bodies of the seed's API, as pydantic models.

The request side is the seed's: a restaurant id and a list of review payloads, of
which only ``id``, ``restaurant_id`` and ``content`` are read (the seed's clients send
more fields; they are accepted and ignored). The response keys depend on the label
set (``neutral_count`` with three classes), so the response models are built per app.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

Id = int | str
_LABEL = re.compile(r"^[a-z][a-z0-9_]*$")


class Review(BaseModel):
    """One review payload; fields other than these three are ignored."""

    model_config = ConfigDict(extra="ignore")

    id: Id | None = Field(default=None, description="the review's id, echoed in the answer")
    restaurant_id: Id | None = Field(default=None, description="must match the request's, if both are given")
    content: str | None = Field(
        description="the review text; null, empty, blank or NaN is counted as unlabelled, without a model call")

    @field_validator("content", mode="before")
    @classmethod
    def _nan_is_missing(cls, value: Any) -> Any:
        # Python's and JavaScript's JSON writers emit a bare NaN for a missing pandas value.
        return None if isinstance(value, float) and math.isnan(value) else value


class AnalyzeRequest(BaseModel):
    """The seed's ``POST /api/v1/sentiment/analyze`` body."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"restaurant_id": 1, "reviews": [{"id": 1, "restaurant_id": 1, "content": "맛있어요!"}]}]})

    restaurant_id: Id | None = Field(
        default=None, description="the restaurant; if left out, the one every review names")
    reviews: list[Review]


class BatchRequest(BaseModel):
    """Several restaurants in one call; answered in the same order."""

    model_config = ConfigDict(extra="ignore")

    restaurants: list[AnalyzeRequest]


class ReviewResult(BaseModel):
    id: Id | None = None
    sentiment: str | None = Field(description="the label; null when the review had no text")
    sentiment_score: float | None = Field(
        description="calibrated probability of 'positive' (of the first label without one); null without text")


class Health(BaseModel):
    """``GET /health``: what the idle watchdog's ``--health-url`` reads (``busy``, ``last_activity``)."""

    status: str = Field(description="ok, no_engine (not loaded) or engine_error (the last engine call failed)")
    busy: bool = Field(description="requests in flight, or one finished less than idle_after_s ago")
    last_activity: str | None = Field(description="ISO 8601 UTC time of the last analyze request, null if none")
    model: str | None
    engine_loaded: bool
    requests_in_flight: int
    requests_served: int
    requests_failed: int
    engine_batches: int = Field(description="engine calls made; fewer than requests when requests were batched")
    idle_after_s: float
    uptime_s: float


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
    single = create_model("AnalyzeResponse", **fields)
    batch = create_model("BatchResponse", results=(list[single], ...), total_count=(int, ...))
    return single, batch
