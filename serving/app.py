"""The serving plane's HTTP API: an application asks, the newest verified model answers.

    GET  /healthz                    200 once a verified model version is loaded, else 503
    GET  /models                     the versions served: number, events learned, clock, age
    POST /predict                    {"user_id", "item_id", "item_genres", "position", "device"} -> P(click)
    GET  /recommendations/{user_id}  ?k=10&genres=a,b&candidates=i1,i2&device=tv&source=batch -> ranked items
    POST /events                     an outcome (click, watch, skip) of a served impression
    GET  /metrics                    Prometheus text format
    GET  /dashboard                  the live dashboard (`serving.dashboard`)
    /v2/...                          the Open Inference Protocol (`serving.oip`)

`create_app(settings)` builds the app; its lifespan starts the `Service` (`serving.service`):
models kept live (reloaded while serving, no request waits or fails for a reload), popular
candidates refreshed, the event log open. Every impression served is logged there. Valid
/predict and /recommendations requests, most of the traffic, are answered in front of FastAPI
(`serving.fastpath`) by the same functions as their routes. A bad request gets 422 with the
field errors; a body over `MAX_BODY` bytes gets 413; with an API token set, POST /events needs it.
The OpenAPI schema is at /openapi.json; FastAPI's HTML docs pages are off: they load their
scripts from a CDN, which a machine without that network cannot reach.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hmac
import json
import os
import time
import typing
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from serving import api, dashboard, oip
from serving.fastpath import FastPath, Hot
from serving.metrics import Instrumented, Metrics
from serving.service import NoBatches, Service, Settings, of_request

MAX_BODY = 64 * 1024
MAX_LIST = 100  # genres or extra candidates in one /recommendations query


Served = Annotated[Service, Depends(of_request)]


async def _bearer(request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]):
    """Lets a write through when no token is set, or when it carries the token."""
    token = request.app.state.service.settings.api_token
    if token and (credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode())):
        raise HTTPException(status_code=401, detail="a valid API token is needed: Authorization: Bearer <token>",
                            headers={"WWW-Authenticate": "Bearer"})


def _listed(values: list[str]) -> list[str]:
    """?genres=a,b&genres=c -> [a, b, c]."""
    items = [v for value in values for v in value.split(",") if v]
    if len(items) > MAX_LIST or any(len(v) > 256 for v in items):
        raise HTTPException(status_code=422, detail=f"at most {MAX_LIST} values of at most 256 characters")
    return list(dict.fromkeys(items))


SETTINGS_ENV = "STREAMML_SERVING_SETTINGS"  # how `python -m serving --workers N` hands its settings to each worker


def settings_to_environment(settings: Settings) -> None:
    os.environ[SETTINGS_ENV] = json.dumps(dataclasses.asdict(settings))


def from_environment() -> FastAPI:
    """The app of the settings in $STREAMML_SERVING_SETTINGS (uvicorn's factory, in each worker)."""
    return create_app(Settings(**json.loads(os.environ[SETTINGS_ENV])))


def create_app(settings: Settings, fast_path: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.service = Service(settings, metrics)
        app.state.service.start()
        try:
            yield
        finally:
            app.state.service.stop()

    metrics = Metrics()
    # FastAPI's own OpenTelemetry off: the server's metrics are Prometheus' (/metrics), and the
    # check whether a tracer is configured cost every request a few microseconds.
    app = FastAPI(title="streamml serving", lifespan=lifespan, docs_url=None, redoc_url=None,
                  telemetry={"tracing": False, "metrics": False, "logs": False},
                  description="Predictions and recommendations from the newest verified model version "
                              "and the online store.")

    # `async` handlers run on the event loop: each is a few milliseconds of work at most (store
    # reads, predictions), cheaper than a hop to a thread pool.
    @app.get("/healthz")
    async def healthz(svc: Served):
        served = svc.live.get(settings.model)
        if served is None:
            return JSONResponse({"status": "waiting", "detail": svc.no_model()}, status_code=503)
        return {"status": "ok", "model": settings.model, "model_version": served.version.version}

    @app.get("/models", response_model=api.ModelsResponse)
    async def models(svc: Served):
        now = time.time()
        return api.ModelsResponse(rejected_versions=svc.live.rejected, models=[
            api.ServedModel(model=key, version=m.version.version, step=m.version.step, clock_ms=m.version.clock_ms,
                            published_ms=m.version.published_ms, age_s=round(now - m.version.published_ms / 1000, 3),
                            metrics=m.version.metrics or {})
            for key, m in sorted(svc.live.all().items())])

    @app.post("/predict", response_model=api.PredictResponse)
    async def predict(body: api.PredictRequest, svc: Served):
        return predict_response(svc, body)

    @app.get("/recommendations/{user_id}", response_model=api.RecommendationsResponse)
    async def recommendations(svc: Served, user_id: Annotated[str, Path(min_length=1, max_length=256)],
                              query: Annotated[api.RecommendationsQuery, Query()]):
        return recommendations_response(svc, user_id, query)

    @app.post("/events", response_model=api.EventResponse, status_code=202, dependencies=[Depends(_bearer)])
    async def events(body: api.EventRequest, svc: Served):
        return api.EventResponse(event_id=svc.record(body))

    @app.get("/metrics")
    async def prometheus_metrics(svc: Served):
        return Response(svc.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.include_router(dashboard.router())
    app.include_router(oip.router(settings.model))  # after the routes above: each request tries them first
    app.add_exception_handler(oip.OIPError, oip.oip_error)
    if fast_path:
        app.add_middleware(FastPath, hot=hot_routes(app))  # added first: inside Instrumented, which counts its answers
    app.add_middleware(Instrumented, metrics=metrics, max_body=MAX_BODY)
    return app


def predict_response(svc: Service, body: api.PredictRequest) -> Response:
    answer = svc.answer(body)
    if "error" in answer:
        raise HTTPException(status_code=answer["status"], detail=answer["error"])
    return JSONResponse(answer)  # already a PredictResponse's: not checked against it again


def recommendations_response(svc: Service, user_id: str, query: api.RecommendationsQuery) -> Response:
    try:
        answer = svc.recommend(user_id, query.k, _listed(query.genres), _listed(query.candidates), query.device,
                               query.source)
    except NoBatches as e:
        raise HTTPException(status_code=409, detail=str(e)) from None
    # Serialised once, by pydantic's own JSON encoder: not checked against the response model
    # again (it is one already), which FastAPI would do.
    return Response(answer.model_dump_json(), media_type="application/json")


def hot_routes(app: FastAPI) -> list[Hot]:
    """/predict and /recommendations/{user_id} for `FastPath`: checked against the routes' own
    models, answered by the routes' own functions; anything else is left to the routes."""
    routes = {getattr(route, "path", None): route for route in app.routes}
    lists = {name for name, field in api.RecommendationsQuery.model_fields.items()
             if typing.get_origin(field.annotation) is list}

    async def recommendations(request: Request) -> Response | None:
        user_id = request.scope["path"][len("/recommendations/"):]
        if not 0 < len(user_id) <= 256 or "/" in user_id:
            return None
        params = request.query_params
        try:
            query = api.RecommendationsQuery.model_validate(
                {name: params.getlist(name) if name in lists else params[name] for name in params})
            return recommendations_response(app.state.service, user_id, query)
        except (ValidationError, HTTPException):
            return None

    async def predict(request: Request) -> Response | None:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return None  # not read as JSON by FastAPI either (its 422 says so), or another JSON type
        try:
            return predict_response(app.state.service, api.PredictRequest.model_validate_json(await request.body()))
        except (ValidationError, HTTPException):
            return None

    return [Hot("POST", "/predict", predict, routes["/predict"]),
            Hot("GET", "/recommendations/", recommendations, routes["/recommendations/{user_id}"])]
