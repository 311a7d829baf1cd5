"""The server's Prometheus metrics (`GET /metrics`, text format) and the ASGI middleware that
counts and times every request, and refuses oversized bodies.

Counted: requests by route and status, their latency (histogram), served impressions and
events, records the event log lost; read when scraped: the online store's age (since the newest
event its profiles applied) and the batch store's (since the time its current batch's features
are as of); and from the dashboard's newest snapshot (`serving.board`, the same figures the page
shows): each model's version, age, windowed scores and label delay, the recent requests/s and
latency quantiles, the Kafka consumer lag, the experiment's state, the alerts and rollbacks.
"""
from __future__ import annotations

import collections
import json
import math
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.exceptions import HTTPException

from serving.board import finite

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
RATE_WINDOW_S = 10.0  # the recent requests that requests/s and the latency quantiles are of
UNWATCHED = ("/dashboard", "/metrics")  # routes left out of them: the watchers', not the traffic's


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("streamml_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("streamml_request_seconds", "Time to answer an HTTP request", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.served = Counter("streamml_served_impressions", "Impressions served (and logged) by source",
                              ["source"], registry=self.registry)
        self.events = Counter("streamml_events", "Outcomes received by POST /events", ["event_type"],
                              registry=self.registry)
        self.variant_errors = Counter("streamml_variant_errors", "Requests an experiment's variant failed and "
                                      "the control answered", ["experiment", "variant"], registry=self.registry)
        self.kafka_requests = Counter("streamml_kafka_requests", "Requests answered from Kafka, by outcome",
                                      ["outcome"], registry=self.registry)
        self.recent: collections.deque = collections.deque(maxlen=500_000)  # (wall time, seconds) of requests

    def window(self, now: float) -> dict:
        """Requests/s and latency p50 and p99 (ms) over the last `RATE_WINDOW_S` seconds."""
        recent = [s for t, s in list(self.recent) if t > now - RATE_WINDOW_S]
        recent.sort()

        def quantile(q):  # the nearest rank
            return recent[max(0, math.ceil(q * len(recent)) - 1)] * 1000

        return {"requests_per_s": len(recent) / RATE_WINDOW_S,
                "latency_p50_ms": quantile(0.5) if recent else None, "latency_p99_ms": quantile(0.99) if recent else None}

    def watch(self, service) -> None:
        """Reports `service`'s models, online store and event log when scraped."""
        self.registry.register(_Live(service))

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _Live:
    """What is read at scrape time rather than counted."""

    def __init__(self, service):
        self.service = service

    def collect(self):
        now = time.time()
        if self.service.board.current is not None:
            yield from board_metrics(self.service.board.current)
        clock = self.service.store.clock()
        yield GaugeMetricFamily("streamml_online_store_age_seconds",
                                "Since the event time of the newest event in the online store",
                                value=float("nan") if clock is None else now - clock / 1000)
        if self.service.batches is not None:
            batch = self.service.batches.current()
            yield GaugeMetricFamily("streamml_batch_age_seconds", "Since the time the current batch's features are as of",
                                    value=float("nan") if batch is None else now - batch.features_ms / 1000)
        yield GaugeMetricFamily("streamml_event_log_failures", "Records the event log could not write",
                                value=self.service.log.failed)
        yield GaugeMetricFamily("streamml_rejected_versions", "Model versions that failed their signature check",
                                value=self.service.live.rejected)
        if self.service.experiment is not None:
            yield GaugeMetricFamily("streamml_experiment_reload_errors",
                                    "Changes of the experiment file refused (the one before routes on)",
                                    value=self.service.experiment.reload_errors)
        if self.service.shadow is not None:
            shadow = GaugeMetricFamily("streamml_shadow_requests", "Requests handed to the shadow model, by outcome",
                                       labels=["outcome"])
            for outcome, n in sorted(self.service.shadow.counts.items()):
                shadow.add_metric([outcome], n)
            yield shadow


MODEL_GAUGES = (("version", "streamml_model_version", "Version of each model served"),
                ("age_s", "streamml_model_age_seconds", "Since the served version was published"),
                ("logloss", "streamml_model_window_logloss", "Log loss over the version's last labels"),
                ("rocauc", "streamml_model_window_rocauc", "ROC AUC over the version's last labels"),
                ("ctr", "streamml_model_window_ctr", "Click rate of the version's last labels"),
                ("calibration", "streamml_model_window_calibration", "Mean prediction / click rate, last labels"),
                ("labels", "streamml_model_window_labels", "Labels the windowed scores are of"),
                ("label_delay_s", "streamml_model_label_delay_seconds",
                 "Since the event time of the newest label the version learned"))


def board_metrics(snapshot: dict):
    """The gauges of a dashboard snapshot (`serving.board`)."""
    yield GaugeMetricFamily("streamml_dashboard_seq", "The dashboard snapshot these figures are of",
                            value=snapshot["seq"])
    for field, name, text in MODEL_GAUGES:
        gauge = GaugeMetricFamily(name, text, labels=["model", "variant"])
        for key, model in snapshot["models"].items():
            gauge.add_metric([key, model["variant"] or ""], finite(model[field]))
        yield gauge
    traffic = snapshot["traffic"]
    yield GaugeMetricFamily("streamml_recent_requests_per_second", f"Requests/s over the last {RATE_WINDOW_S:g} s "
                            "(dashboard and scrapes left out)", value=traffic["requests_per_s"])
    latency = GaugeMetricFamily("streamml_recent_latency_seconds", f"Latency quantiles over the last "
                                f"{RATE_WINDOW_S:g} s", labels=["quantile"])
    for q in ("p50", "p99"):
        latency.add_metric([f"0.{q[1:]}"], finite(traffic[f"latency_{q}_ms"]) / 1000)
    yield latency
    yield GaugeMetricFamily("streamml_kafka_consumer_lag", "Records of the learning job's topic its group has not "
                            "committed", value=finite(snapshot["consumer_lag"]))
    experiment = snapshot["experiment"]
    if experiment is not None:
        info = GaugeMetricFamily("streamml_experiment_state", "The experiment routing requests (1)",
                                 labels=["experiment", "kind", "state", "stage"])
        info.add_metric([experiment["name"], experiment["kind"], experiment["state"], str(experiment["stage"] or "")], 1)
        yield info
        yield GaugeMetricFamily("streamml_experiment_canary_weight", "The canary's share of users",
                                value=finite(experiment["canary_weight"]))
    events = GaugeMetricFamily("streamml_alerts", "Alerts and rollbacks seen, by kind", labels=["kind"])
    for kind, n in sorted(snapshot["counts"].items()):
        events.add_metric([kind], n)
    yield events


class BodyTooLarge(HTTPException):
    """A body found too large while read: an HTTPException, so that the app answers 413 (FastAPI
    turns other errors in reading a body into 400)."""

    def __init__(self, max_body: int):
        super().__init__(413, f"request body over {max_body} bytes")


class Instrumented:
    """ASGI middleware: refuses bodies over `max_body` bytes (413), counts and times requests
    by route template (not by path: one series per route, whatever the ids)."""

    def __init__(self, app, metrics: Metrics, max_body: int):
        self.app, self.metrics, self.max_body = app, metrics, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, received = time.perf_counter(), [500], [0]
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await self._too_large(send, status)
            return self._count(scope, status[0], start)

        async def counted_receive():
            message = await receive()
            received[0] += len(message.get("body", b""))
            if received[0] > self.max_body:  # a chunked body without a length
                raise BodyTooLarge(self.max_body)
            return message

        async def recorded_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, counted_receive, recorded_send)
        finally:
            self._count(scope, status[0], start)

    async def _too_large(self, send, status):
        status[0] = 413
        body = json.dumps({"detail": f"request body over {self.max_body} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _count(self, scope, status: int, start: float):
        route = scope.get("route")
        name, seconds = getattr(route, "path", None) or "unmatched", time.perf_counter() - start
        self.metrics.requests.labels(name, str(status)).inc()
        self.metrics.latency.labels(name).observe(seconds)
        if not name.startswith(UNWATCHED):
            self.metrics.recent.append((time.time(), seconds))
