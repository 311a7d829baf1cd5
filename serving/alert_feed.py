"""The learning plane's alerts (`core.records.Alert`: a guard's incidents and retrain signals)
as the serving process reads them, for the dashboard: tailed from the JSON lines a batch job
writes (`alerts.jsonl`), or read from the Kafka topic a streaming job writes (`PREFIX.alerts`,
schemaless Avro or the Confluent wire format), from its beginning.

A record that is not an alert is skipped and counted (`unreadable`), never fatal.

>>> import json, pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "alerts.jsonl"
>>> feed = open_alerts(str(path))
>>> feed.poll()  # no file yet
[]
>>> _ = path.write_text(json.dumps({"signal": "alert", "kind": "drift", "reason": "r"}) + "\\n{")
>>> [a["kind"] for a in feed.poll()], feed.poll()  # a line still being written waits
(['drift'], [])
"""
from __future__ import annotations

import json
import logging
import os
import secrets

from core import kafka

LOG = logging.getLogger(__name__)


class FileAlerts:
    def __init__(self, path: str):
        self.path, self.offset, self.unreadable = path, 0, 0

    def poll(self) -> list[dict]:
        """The alerts appended since the last poll (a file that shrank is read again from the start)."""
        try:
            if os.path.getsize(self.path) < self.offset:
                self.offset = 0
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        complete = data[:data.rfind(b"\n") + 1]  # a line still being written is read when it ends
        self.offset += len(complete)
        return [alert for line in complete.splitlines() if line.strip() and (alert := self._parse(line)) is not None]

    def _parse(self, line: bytes) -> dict | None:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            self.unreadable += 1
            return None
        return record

    def close(self) -> None:
        pass


class KafkaAlerts:
    """The topic's alerts from its beginning, by a consumer of its own (a group no one shares)."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic, self.unreadable, self._said = topic, 0, set()
        self.consumer = kafka.consumer(bootstrap, f"streamml-dashboard-{secrets.token_hex(4)}")
        self.consumer.subscribe([topic])

    def poll(self, most: int = 500) -> list[dict]:
        alerts = []
        for message in self.consumer.consume(most, timeout=0):
            if message.error():
                if str(message.error()) not in self._said:  # once each: a topic not there yet says so every poll
                    self._said.add(str(message.error()))
                    LOG.warning("alerts topic %s: %s", self.topic, message.error())
                continue
            value = message.value() or b""
            record = kafka.decode(value, "alert")
            if record is None and value[:1] == b"\x00":  # the Confluent wire format: 5 bytes, then Avro
                record = kafka.decode(value[5:], "alert")
            if record is None:
                self.unreadable += 1
                continue
            alerts.append(record)
        return alerts

    def close(self) -> None:
        self.consumer.close()


def open_alerts(location: str | None):
    """A feed of `location`: kafka://HOST:PORT/TOPIC or a JSON-lines file; None for None."""
    if not location:
        return None
    if location.startswith("kafka://"):
        bootstrap, topic = kafka.parse_location(location, "alerts")
        return KafkaAlerts(bootstrap, topic)
    return FileAlerts(location)
