"""The serving plane's HTTP API: an application asks, the newest verified model answers.

    GET  /healthz   200 once a verified model version is loaded, else 503
    GET  /models    the versions served: number, events learned, event-time clock, age
    POST /predict   {"user_id", "item_id", "item_genres", "position", "device"} -> P(click)

`create_app(settings)` builds the app; its lifespan opens the registry and the online store
and keeps the models live (`serving.live`: reloaded while serving, no request waits or fails
for a reload). Features are computed on arrival with the learning plane's own functions
(`serving.features`). A bad request gets 422 with the field errors; a body over `MAX_BODY`
bytes gets 413. The OpenAPI schema is at /openapi.json; FastAPI's HTML docs pages are off:
they load their scripts from a CDN, which a machine without that network cannot reach.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from core.interactions import POSITIONS
from models import serde
from serving import features
from serving.live import LiveModels
from stores.online import OnlineStore, open_online_store
from stores.registry import open_registry

MAX_BODY = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Settings:
    registry: str  # the model registry (stores.registry) the learning plane publishes to
    online_store: str  # the online store of profiles (stores.online)
    model: str = "recommender"  # the model key /predict answers with
    key_file: str | None = None  # the keys that check versions; default $STREAMML_STATE_KEY, else <registry>.key
    poll_s: float = 0.2  # how often the registry is asked for newer versions


class PredictRequest(BaseModel):
    """An impression to score: who, what, where it would be shown."""

    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=256)
    item_id: str = Field(min_length=1, max_length=256)
    item_genres: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=32)
    position: int = Field(ge=0, lt=POSITIONS)
    device: str | None = Field(default=None, max_length=64)


class PredictResponse(BaseModel):
    request_id: str  # the impression id this prediction would be logged under
    probability: float  # P(click)
    model: str
    model_version: int
    model_step: int  # labels the version had learned
    served_at_ms: int  # the request's time: the features are as of then
    profile_clock_ms: dict[str, int | None]  # event time of the newest event in each profile used (None: new)


class ServedModel(BaseModel):
    model: str
    version: int
    step: int
    clock_ms: int
    published_ms: int
    age_s: float  # since it was published


class ModelsResponse(BaseModel):
    models: list[ServedModel]
    rejected_versions: int  # versions that failed their signature check (never served)


def live_models(request: Request) -> LiveModels:
    return request.app.state.live


def online_store(request: Request) -> OnlineStore:
    return request.app.state.store


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        keys = serde.KeySource(file=settings.key_file, store=settings.registry).resolve()
        registry, store = open_registry(settings.registry), open_online_store(settings.online_store)
        app.state.live, app.state.store = LiveModels(registry, keys, [settings.model], settings.poll_s), store
        app.state.live.start()
        try:
            yield
        finally:
            app.state.live.stop()
            registry.close()
            store.close()

    app = FastAPI(title="streamml serving", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Predictions from the newest verified model version and the online store.")

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next):
        if int(request.headers.get("content-length") or 0) > MAX_BODY:
            return JSONResponse({"detail": f"request body over {MAX_BODY} bytes"}, status_code=413)
        return await call_next(request)

    # `async` handlers run on the event loop: each is well under a millisecond of work (a
    # SQLite read, one prediction), cheaper than a hop to a thread pool.
    @app.get("/healthz")
    async def healthz(live: Annotated[LiveModels, Depends(live_models)]):
        served = live.get(settings.model)
        if served is None:
            return JSONResponse({"status": "waiting", "detail": _no_model(settings)}, status_code=503)
        return {"status": "ok", "model": settings.model, "model_version": served.version.version}

    @app.get("/models", response_model=ModelsResponse)
    async def models(live: Annotated[LiveModels, Depends(live_models)]):
        now = time.time()
        return ModelsResponse(rejected_versions=live.rejected, models=[
            ServedModel(model=key, version=m.version.version, step=m.version.step, clock_ms=m.version.clock_ms,
                        published_ms=m.version.published_ms, age_s=round(now - m.version.published_ms / 1000, 3))
            for key, m in sorted(live.all().items())])

    @app.post("/predict", response_model=PredictResponse)
    async def predict(body: PredictRequest, live: Annotated[LiveModels, Depends(live_models)],
                      store: Annotated[OnlineStore, Depends(online_store)]):
        served = live.get(settings.model)
        if served is None:
            raise HTTPException(status_code=503, detail=_no_model(settings))
        now_ms = int(time.time() * 1000)
        x, clocks = features.features(store, body.model_dump(), now_ms)
        probability = served.model.predict_proba_one(x).get(True, 0.0)
        return PredictResponse(request_id=uuid.uuid4().hex, probability=probability, model=settings.model,
                               model_version=served.version.version, model_step=served.version.step,
                               served_at_ms=now_ms, profile_clock_ms=clocks)

    return app


def _no_model(settings: Settings) -> str:
    return (f"no verified version of model {settings.model!r} in {settings.registry} yet "
            "(the learning plane publishes it: python -m pipelines.recommend)")
