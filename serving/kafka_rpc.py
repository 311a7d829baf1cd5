"""Kafka request/reply, for services that speak Kafka rather than HTTP: a /predict request on
`PREFIX.requests` gets its answer on `PREFIX.replies` (or on the topic its `reply_to` header
names), with the request's `correlation_id` header and key.

    value   {"user_id", "item_id", "item_genres", "position", "device"} as JSON (/predict's body)
    reply   /predict's answer as JSON, or {"error": ..., "status": 422 or 503} for a request that
            could not be answered (not JSON, a field wrong, no model yet): every request is answered

The servers of one deployment share the consumer group `PREFIX.serving`, so each request is
answered by one of them. A reply that the broker refuses is counted and logged.
"""
from __future__ import annotations

import json
import logging
import threading

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from pydantic import ValidationError

from core.kafka import ensure_topic, parse_location
from serving.api import PredictRequest

LOG = logging.getLogger(__name__)


def parse_requests_location(location: str) -> tuple[str, str]:
    """kafka://HOST:PORT/PREFIX -> (bootstrap, prefix); ValueError otherwise."""
    return parse_location(location, "Kafka requests", "PREFIX")


class KafkaRequests:
    """Answers /predict requests from `PREFIX.requests` with `predict(body) -> dict`, on a thread."""

    def __init__(self, location: str, predict, metrics=None):
        bootstrap, prefix = parse_requests_location(location)
        self.bootstrap = bootstrap
        self.requests_topic, self.replies_topic = f"{prefix}.requests", f"{prefix}.replies"
        self.predict, self.metrics, self.failed = predict, metrics, 0
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}.serving",
                                   "auto.offset.reset": "earliest", "enable.auto.commit": True,
                                   "fetch.wait.max.ms": 5, "enable.partition.eof": False})
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-requests", daemon=True)

    def start(self) -> None:
        for topic in (self.requests_topic, self.replies_topic):
            ensure_topic(self.bootstrap, topic)
        self._consumer.subscribe([self.requests_topic])
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._consumer.close()
        self._producer.flush(5)

    def answer(self, value: bytes | None) -> dict:
        """The reply to one request's value."""
        try:
            body = PredictRequest.model_validate_json(value or b"")
        except ValidationError as e:
            return {"error": "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}"
                                       for err in e.errors()), "status": 422}
        return self.predict(body)

    def _run(self):
        while not self._stop.is_set():
            # One at a time: a batch (`consume`) waits for its count or its timeout, a reply's latency.
            message = self._consumer.poll(0.1)
            self._producer.poll(0)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() != KafkaError._PARTITION_EOF:
                    LOG.warning("Kafka requests: %s", message.error())
                continue
            self._reply(message)

    def _reply(self, message):
        headers = dict(message.headers() or [])
        reply = self.answer(message.value())
        topic = (headers.get("reply_to") or self.replies_topic.encode()).decode()
        reply_headers = [("correlation_id", headers["correlation_id"])] if "correlation_id" in headers else []
        self._send(topic, message.key(), json.dumps(reply).encode(), reply_headers)
        if self.metrics is not None:
            self.metrics.kafka_requests.labels("error" if "error" in reply else "ok").inc()

    def _send(self, topic, key, value, headers):
        try:
            self._producer.produce(topic, key=key, value=value, headers=headers, on_delivery=self._delivered)
        except (BufferError, KafkaException, ValueError) as e:  # a full queue, a bad topic name
            self._lost(f"reply not sent to {topic!r}: {e}")

    def _delivered(self, error, message):
        if error is not None:
            self._lost(f"reply not delivered to {message.topic()!r}: {error}")

    def _lost(self, why: str):
        self.failed += 1
        LOG.error("Kafka requests: %s", why)
