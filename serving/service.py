"""What the serving process does, behind its HTTP routes: predict, recommend, take outcomes,
and log every impression it served, so that the learning plane labels and learns from exactly
what was shown.

A `Service` holds the live models (`serving.live`), the online store, the popular candidates
(`serving.candidates`) and the event log (`serving.eventlog`); it keeps no state of its own
that another replica would need (a short cache of rankings aside), so replicas against the
same registry and stores answer alike.
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import random
import sys
import time

from cachetools import TTLCache
from fastapi import Request

from core.features import PROFILES
from core.interactions import impression_features
from core.ranking import Scored, score
from core.requests import lookup, request_fields
from models import serde
from serving import api
from serving.candidates import PopularItems
from serving.eventlog import open_event_log, shadow_location
from serving.ids import UniqueIds
from serving.kafka_rpc import KafkaRequests
from serving.board import Board
from serving.lag import ConsumerLag
from serving.alert_feed import open_alerts
from serving.live import LiveModels
from serving.metrics import Metrics
from serving.periodic import Periodic
from serving.exploration import explore
from serving.experiment import RunningExperiment
from serving.settings import Settings
from serving.shadow import ShadowJob, ShadowScorer, ShadowSettings
from experiments.routing import Assignment
from stores.online import open_online_store
from stores.toplists import open_toplists
from stores.registry import Version, open_registry


LOG = logging.getLogger(__name__)
SWITCH_S = 0.0005
DECODED_STATES = 4096  # profile states and batch lists kept decoded (`stores`): the users and items asked about most
NOT_ROUTED = {"experiment": None, "variant": None, "bucket": None, "assignment_probability": None}


@dataclasses.dataclass(frozen=True)
class Prediction:
    request_id: str
    probabilities: list[float]
    version: Version  # of the model that predicted
    now_ms: int  # the time the features are as of
    clocks: list[dict]  # per impression: {kind: the profile's clock ms, None for a new entity}


class NoModel(Exception):
    """No verified version of the model is loaded yet."""


class NoBatches(Exception):
    """The batch store was asked for, and the server has none."""


async def of_request(request: Request) -> Service:
    """The `Service` of the app serving `request` (FastAPI's dependency for the routes). Async:
    FastAPI runs a plain function dependency in its thread pool, a thread hop per request (under
    load the hand-offs stalled answers for hundreds of milliseconds)."""
    return request.app.state.service


class Service:
    def __init__(self, settings: Settings, metrics: Metrics | None = None):
        self.settings = settings
        keys = serde.KeySource(file=settings.key_file, store=settings.registry).resolve()
        self.registry = open_registry(settings.registry)
        self.store = open_online_store(settings.online_store, decoded=DECODED_STATES)
        self.experiment = RunningExperiment(settings.experiment, settings.experiment_store or settings.registry) \
            if settings.experiment else None
        self.live = LiveModels(self.registry, keys, [settings.model])
        self.popular = PopularItems(self.store, settings.candidates)
        # Each refreshed now (the server starts with its models and candidates), then in the background.
        self._refreshes = [Periodic("live-models", settings.poll_s, self._refresh_models),
                           Periodic("popular-items", settings.candidates_refresh_s, self.popular.refresh)]
        self.log = open_event_log(settings.event_log, settings.schema_registry)
        self.shadow = ShadowScorer(ShadowSettings(
            self.experiment.config.variants[self.experiment.config.treatment()].model, settings.registry, settings.key_file, settings.online_store, shadow_location(settings.event_log),
            settings.schema_registry, settings.poll_s, settings.candidates, settings.candidates_refresh_s)) \
            if self.experiment is not None and self.experiment.config.kind == "shadow" else None
        self.metrics = metrics or Metrics()
        self.metrics.watch(self)
        self.rng = random.Random(settings.seed)
        self.new_id = UniqueIds()
        self.cache = TTLCache(maxsize=10_000, ttl=settings.cache_s) if settings.cache_s > 0 else None
        self.batches = open_toplists(settings.batch_store, decoded=DECODED_STATES, decode=_ranked) \
            if settings.batch_store else None
        self.kafka = KafkaRequests(settings.kafka_requests, self.answer, self.metrics) \
            if settings.kafka_requests else None
        self.variant_errors = 0
        self.board = Board(self, open_alerts(settings.alerts),
                           ConsumerLag(settings.consumer_lag, settings.consumer_group) if settings.consumer_lag else None)

    def start(self):
        for job in self._refreshes:
            job.start()
        self.board.start()  # after the models: its first snapshot has them
        if self.kafka is not None:
            self.kafka.start()
        if self.shadow is not None:
            self.shadow.start()
        gc.freeze()  # what start-up made lives as long as the server: not scanned by every full collection
        # The background threads (reloads, refreshes, the event log's writer) hand the GIL back to
        # the event loop within SWITCH_S when it asks, not within Python's default of 5 ms, which
        # an answer waiting on them paid in full.
        sys.setswitchinterval(SWITCH_S)

    def stop(self):
        self.board.stop()
        if self.kafka is not None:
            self.kafka.stop()
        for job in self._refreshes:
            job.stop()
        if self.experiment is not None:
            self.experiment.close()
        if self.shadow is not None:
            self.shadow.stop()
        self.log.close()
        self.registry.close()
        self.store.close()
        if self.batches is not None:
            self.batches.close()

    def predict(self, rows: list[dict]) -> Prediction:
        """P(click) of each impression in `rows` (/predict's fields), each logged as served under
        a new request id (row i > 0: `<request id>-<i>`)."""
        started, now_ms, request_id = time.perf_counter(), _now_ms(), self.new_id()
        assigned = self._assign(rows[0]["user_id"], request_id) if rows else None
        served = self.live.get(assigned.model_key if assigned else self.settings.model)
        if served is None:
            raise NoModel(self.no_model())
        found = [lookup(self.store, row) for row in rows]
        fields = [request_fields(row, now_ms, profiles) for row, profiles in zip(rows, found)]
        probabilities, served, error = self._guarded(assigned, served, lambda model: [
            model.predict_proba_one(impression_features(f)).get(True, 0.0) for f in fields])
        serve_ms = (time.perf_counter() - started) * 1000
        for i, (f, probability) in enumerate(zip(fields, probabilities)):
            self._log_impression(request_id if i == 0 else f"{request_id}-{i}", f, served.version.version,
                                 None, probability, served.version.model_key, assigned,
                                 serve_ms if i == 0 else None, error)
        self.metrics.served.labels("predict").inc(len(rows))
        if assigned is not None and assigned.shadow and self.shadow is not None:
            self.shadow.submit(ShadowJob.of_rows(assigned, request_id, rows, now_ms))
        return Prediction(request_id, probabilities, served.version, now_ms,
                          [{kind: f[1] if f else None for kind, f in profiles.items() if kind in PROFILES} for profiles in found])

    def answer(self, body: api.PredictRequest) -> dict:
        """/predict's answer to `body` as a dict, or {"error", "status": 503} without a model."""
        try:
            done = self.predict([body.model_dump()])
        except NoModel as e:
            return {"error": str(e), "status": 503}
        return api.PredictResponse(request_id=done.request_id, probability=done.probabilities[0],
                                   model=done.version.model_key, model_version=done.version.version,
                                   model_step=done.version.step, served_at_ms=done.now_ms,
                                   profile_clock_ms=done.clocks[0]).model_dump()

    def recommend(self, user_id: str, k: int, genres=(), extra=(), device: str | None = None,
                  source: str = "auto") -> api.RecommendationsResponse:
        """The user's top `k`: from the batch store when `source` is "batch" (or "auto" with
        `batch_first`) and it holds a list for the user and device, else ranked now by the live
        model (or by popularity without one). Stated genres or extra candidates need the live
        ranking: a batch was ranked without them."""
        if source == "batch" and self.batches is None:
            raise NoBatches("no batch store: start the server with --batch_store (python -m pipelines.batch_serve "
                            "writes one)")
        started, batch_wanted = time.perf_counter(), source == "batch" or (source == "auto" and self.settings.batch_first)
        if self.batches is not None and batch_wanted and not genres and not extra:
            top = self.batches.get(user_id, device or "")
            if top is not None:
                return self._serve(user_id, k, device, "batch", top.items, top.user_clock_ms, top.batch.model_version,
                                   _now_ms(), top.batch.features_ms, started, top.batch.batch_id)
        request_id = self.new_id()
        assigned = self._assign(user_id, request_id)
        served = self.live.get(assigned.model_key if assigned else self.settings.model)
        now_ms, error = _now_ms(), None
        key = (user_id, device, tuple(genres), tuple(extra), served and (served.version.model_key, served.version.version))
        ranked = self.cache.get(key) if self.cache is not None else None
        popular = self.popular.current
        if ranked is None:
            ranked, served, error = self._guarded(assigned, served, lambda model: score(
                model, self.store, user_id, device, popular.candidates(extra), now_ms, genres, known=popular.profiles))
            if self.cache is not None and error is None:
                self.cache[key] = ranked
        scored, user_clock = ranked
        model_key = served.version.model_key if served else assigned.model_key if assigned else self.settings.model
        answer = self._serve(user_id, k, device, "live" if served else "fallback", scored, user_clock,
                             served and served.version.version, now_ms, now_ms, started, request_id=request_id,
                             model_key=model_key, assigned=assigned, error=error)
        if assigned is not None and assigned.shadow and self.shadow is not None:
            self.shadow.submit(ShadowJob.of_ranking(assigned, user_id, device, genres, extra, now_ms, answer.items))
        return answer

    def _serve(self, user_id, k, device, source, ranked, user_clock, version, now_ms, features_ms, started,
               batch_id=None, request_id=None, model_key=None, assigned=None, error=None):
        """The slots filled from `ranked` (exploration), each impression logged as served at `now_ms`."""
        request_id = request_id or self.new_id()
        model_key = model_key or self.settings.model
        items, serve_ms = [], (time.perf_counter() - started) * 1000
        for shown in explore(ranked, k, self.settings.epsilon, self.rng):
            impression_id = f"{request_id}-{shown.position}"
            item = shown.item
            self._log_impression(impression_id, {
                "user_id": user_id, "item_id": item.item_id, "item_genres": list(item.genres),
                "position": shown.position, "device": device, "event_time": now_ms, "features": item.features},
                version, shown.propensity, item.probability, model_key, assigned, serve_ms if not items else None, error)
            items.append({"item_id": item.item_id, "position": shown.position, "impression_id": impression_id,
                          "probability": item.probability, "propensity": shown.propensity,
                          "explored": shown.explored, "genres": list(item.genres)})
        self.metrics.served.labels(source).inc(len(items))
        # Validated in one call (pydantic's core): a third of the time of `model_construct` per item.
        return api.RecommendationsResponse.model_validate({
            "request_id": request_id, "user_id": user_id, "items": items, "source": source, "model": model_key,
            "model_version": version, "served_at_ms": now_ms, "user_clock_ms": user_clock, "features_ms": features_ms,
            "batch_id": batch_id, "experiment": assigned and assigned.experiment, "variant": assigned and assigned.variant})

    def record(self, event: api.EventRequest) -> str:
        """Logs an outcome from an app; returns its event id."""
        record = {**event.model_dump(), "event_id": event.event_id or self.new_id(),
                  "event_time": _now_ms() if event.event_time is None else event.event_time}
        self.log.write(record)
        self.metrics.events.labels(event.event_type).inc()
        return record["event_id"]

    def no_model(self) -> str:
        return (f"no verified version of model {self.settings.model!r} in {self.settings.registry} yet "
                "(the learning plane publishes it: python -m pipelines.recommend)")

    def _guarded(self, assigned: Assignment | None, served, work):
        """`work(model)` with the served model, and the model; if a variant's raises, with the
        control's (a bandit's: the server's) instead, and the error's class. A failing variant costs
        its users no answer; its errors are logged with its impressions and counted."""
        try:
            return work(served.model if served else None), served, None
        except Exception as e:
            config = self.experiment.config if assigned else None
            fallback = self.live.get(config.variants[config.control].model if config.control else self.settings.model) \
                if config else None
            if fallback is None or fallback is served:
                raise
            self.variant_errors += 1
            self.metrics.variant_errors.labels(assigned.experiment, assigned.variant).inc()
            if self.variant_errors <= 10 or self.variant_errors % 1000 == 0:
                LOG.error("variant %s of %s failed (%d so far), the control answered: %r", assigned.variant,
                          assigned.experiment, self.variant_errors, e)
            return work(fallback.model), fallback, type(e).__name__

    def _assign(self, user_id: str, request_id: str) -> Assignment | None:
        return self.experiment.assign(user_id, request_id) if self.experiment is not None else None

    def _refresh_models(self) -> int:
        if self.experiment is not None:
            self.experiment.refresh()
            self.live.watch(self.experiment.config.model_keys())
        return self.live.refresh()

    def _log_impression(self, impression_id: str, fields: dict, version: int | None, propensity: float | None,
                        probability: float | None, model_key: str, assigned: Assignment | None,
                        serve_ms: float | None = None, error: str | None = None):
        routed = {"experiment": assigned.experiment, "variant": assigned.variant, "bucket": assigned.bucket,
                  "assignment_probability": assigned.probability} if assigned else NOT_ROUTED
        self.log.write({**routed,
            "event_id": impression_id, "event_type": "impression", "event_time": fields["event_time"],
            "user_id": fields["user_id"], "item_id": fields["item_id"], "item_genres": fields["item_genres"],
            "position": fields["position"], "device": fields.get("device"),
            "model_key": model_key if version is not None else None, "model_version": version,
            "propensity": propensity, "served_features": fields["features"], "served_probability": probability,
            "serve_ms": serve_ms, "error": error})


def _ranked(items: list[dict]) -> list[Scored]:
    """A batch list's items as the ranked items a lookup serves (features: not kept in a batch)."""
    return [Scored(i["item_id"], tuple(i["genres"]), i["probability"], 0.0, None) for i in items]


def _now_ms() -> int:
    return int(time.time() * 1000)
