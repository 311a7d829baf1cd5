"""The serving API's requests and responses (pydantic models: FastAPI checks each request
against them and answers 422 with the field errors; the OpenAPI schema is made from them)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.interactions import POSITIONS

Id = Annotated[str, Field(min_length=1, max_length=256)]
Genre = Annotated[str, Field(min_length=1, max_length=64)]


class PredictRequest(BaseModel):
    """An impression to score: who, what, where it would be shown."""

    model_config = ConfigDict(extra="forbid")
    user_id: Id
    item_id: Id
    item_genres: list[Genre] = Field(default_factory=list, max_length=32)
    position: int = Field(ge=0, lt=POSITIONS)
    device: str | None = Field(default=None, max_length=64)


class PredictResponse(BaseModel):
    request_id: str  # the impression id it is logged under
    probability: float  # P(click)
    model: str
    model_version: int
    model_step: int  # labels the version had learned
    served_at_ms: int  # the request's time: the features are as of then
    profile_clock_ms: dict[str, int | None]  # event time of the newest event in each profile used (None: new)


class RecommendationsQuery(BaseModel):
    """/recommendations/{user_id}'s query parameters (others are ignored)."""

    k: int = Field(default=10, ge=1, le=100)
    genres: list[str] = Field(default_factory=list, description="stated interests, e.g. drama,comedy")
    candidates: list[str] = Field(default_factory=list, description="items to rank besides the popular")
    device: str | None = Field(default=None, max_length=64)
    source: Literal["auto", "live", "batch"] = Field(
        default="auto", description="batch: the batch job's list when it has one (else live); live: ranked now; "
                                    "auto: batch first with --batch_first")


class RecommendedItem(BaseModel):
    item_id: str
    position: int  # the slot, 0 first
    impression_id: str  # the id its outcome (POST /events) refers to
    probability: float | None  # the model's P(click) at the top slot; None in the popularity fallback
    propensity: float  # P(the serving policy shows this item in this slot), for off-policy evaluation
    explored: bool  # drawn at random (exploration) rather than the best left
    genres: list[str]


class RecommendationsResponse(BaseModel):
    request_id: str
    user_id: str
    items: list[RecommendedItem]
    # ranked now by the live model, computed ahead by the batch job, or by popularity (no model yet)
    source: Literal["live", "batch", "fallback"]
    model: str
    model_version: int | None
    served_at_ms: int
    user_clock_ms: int | None  # event time of the newest event in the user's profile (None: new user)
    features_ms: int  # the time the ranking's features are as of: now, or the batch's time
    batch_id: int | None = None  # the batch it came from (source "batch")
    experiment: str | None = None  # the experiment that routed the request, and the variant it got
    variant: str | None = None


class EventRequest(BaseModel):
    """An outcome of an impression that was served (`impression_id`), from an app."""

    model_config = ConfigDict(extra="forbid")
    event_type: Literal["click", "watch", "skip"]
    impression_id: Id
    user_id: Id
    item_id: Id
    item_genres: list[Genre] = Field(default_factory=list, max_length=32)
    event_time: int | None = Field(default=None, ge=0, description="epoch ms; default: when it arrives")
    event_id: Id | None = Field(default=None, description="default: a new unique id")
    watch_seconds: float | None = Field(default=None, ge=0)
    device: str | None = Field(default=None, max_length=64)


class EventResponse(BaseModel):
    event_id: str


class ServedModel(BaseModel):
    model: str
    version: int
    step: int
    clock_ms: int
    published_ms: int
    age_s: float  # since it was published
    metrics: dict = {}  # the learner's progressive validation scores when it published (core.progressive)


class ModelsResponse(BaseModel):
    models: list[ServedModel]
    rejected_versions: int  # versions that failed their signature check (never served)
