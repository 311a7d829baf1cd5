"""The model registry: signed, versioned snapshots of each model, published by the learning
plane and loaded by the serving plane.

A version holds the model's signed bytes and what a server or a person needs
to judge it: the events it has learned (`step`), the event time of the last one (`clock_ms`),
the learner's watermark, when it was published, and its progressive metrics so far. The
registry stores the signed bytes as given (`models.serde`); a reader checks them before
anything is unpickled.

- **Versions only increase** per model key: each publish takes the next number, and the newest
  version is never deleted, so a number is never given twice.
- **Retention** keeps the newest `keep` versions of each key, and every pinned version until it
  is unpinned (an offline model registered, a promoted version, a known-good snapshot).
- **Stages**: `promote(key, version, stage)` puts a version in `candidate` or `production`; a
  stage holds one version per key (the one it held before leaves the stage, still pinned), and a
  promoted version is pinned.
- **Annotations**: `annotate(key, version, metrics)` adds to a version's metrics what is
  learned after it was published (an offline evaluation, its lineage).

`Registry` is the interface; `open_registry(location)` picks the implementation: SQLite, the
embedded default (several processes on one machine may share the file), or PostgreSQL, where
servers and learners on several machines share one registry.

>>> from river import linear_model
>>> from models import serde
>>> keys = serde.keyring("k" * 32)
>>> registry = open_registry(":memory:", keep=2)
>>> for step in (10, 20, 30):
...     v = registry.publish("clicks", serde.dumps(linear_model.LogisticRegression(), keys), step=step,
...                          clock_ms=step * 1000)
>>> [(v.version, v.step) for v in registry.versions("clicks")]
[(2, 20), (3, 30)]
>>> registry.promote("clicks", 2, "production").pinned
'production'
>>> registry.latest("clicks").version, registry.latest("clicks", "production").version
(3, 2)
>>> type(serde.loads(registry.blob("clicks", 3), keys)).__name__
'LogisticRegression'
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Protocol

from stores.sql import is_server, open_database

STAGES = ("candidate", "production")
KEEP = 10  # unpinned versions kept per model key, newest first

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    model_key TEXT NOT NULL, version BIGINT NOT NULL, step BIGINT NOT NULL, clock_ms BIGINT NOT NULL,
    watermark_ms BIGINT, published_ms BIGINT NOT NULL, metrics TEXT NOT NULL, stage TEXT, pinned TEXT,
    blob BLOB NOT NULL, PRIMARY KEY (model_key, version));
"""
_FIELDS = "model_key, version, step, clock_ms, watermark_ms, published_ms, metrics, stage, pinned"


@dataclasses.dataclass(frozen=True)
class Version:
    """One published model version (without its bytes: `Registry.blob`)."""

    model_key: str
    version: int
    step: int  # events learned
    clock_ms: int  # event time of the last event learned
    watermark_ms: int | None  # the learner's input watermark when it published
    published_ms: int  # wall clock when published
    metrics: dict  # progressive metrics so far, by name
    stage: str | None = None  # None, or one of STAGES
    pinned: str | None = None  # why it outlives retention, or None


class Registry(Protocol):
    """What the learner (publish) and the servers (read) need from a model registry."""

    def publish(self, model_key: str, blob: bytes, *, step: int, clock_ms: int, watermark_ms: int | None = None,
                metrics: dict | None = None) -> Version: ...

    def latest(self, model_key: str, stage: str | None = None) -> Version | None: ...

    def get(self, model_key: str, version: int) -> Version: ...

    def blob(self, model_key: str, version: int) -> bytes: ...

    def versions(self, model_key: str | None = None) -> list[Version]: ...

    def promote(self, model_key: str, version: int, stage: str) -> Version: ...

    def pin(self, model_key: str, version: int, reason: str) -> Version: ...

    def annotate(self, model_key: str, version: int, metrics: dict) -> Version: ...

    def unpin(self, model_key: str, version: int) -> Version: ...

    def close(self) -> None: ...


class UnknownVersion(LookupError):
    """Raised for a model key and version the registry does not hold (never, or no longer)."""


def open_registry(location: str, keep: int = KEEP) -> Registry:
    """The registry at `location`: a SQLite file path (or `sqlite:///relative`,
    `sqlite:////absolute`), or a PostgreSQL URL (`postgresql://user@host:port/db`) where several
    servers and learners share it.

    >>> open_registry("redis://localhost:6379")
    Traceback (most recent call last):
    ...
    ValueError: no model registry for 'redis://' locations (have: SQLite file paths, sqlite:///PATH, postgresql://); implement stores.registry.Registry
    """
    schema = _SCHEMA.replace("BLOB", "BYTEA") if is_server(location) else _SCHEMA
    return SQLRegistry(open_database(location, "model registry", schema, "stores.registry.Registry"), keep)


class SQLRegistry:
    """A `Registry` in a SQL database (`stores.sql`): a SQLite file (WAL: servers read while a
    learner publishes) or a PostgreSQL server."""

    def __init__(self, db, keep: int = KEEP):
        if keep < 1:
            raise ValueError(f"keep={keep}: a registry keeps at least the newest version of each model")
        self._db, self.keep = db, keep
        self.path = db.where  # the file, or the server's URL without a password

    def publish(self, model_key, blob, *, step, clock_ms, watermark_ms=None, metrics=None) -> Version:
        with self._db.transaction(model_key):  # the next number, taken by one publisher at a time
            [(last,)] = self._db.execute("SELECT COALESCE(MAX(version), 0) FROM versions WHERE model_key = ?",
                                         (model_key,))
            self._db.execute(f"INSERT INTO versions ({_FIELDS}, blob) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?)",
                             (model_key, last + 1, int(step), int(clock_ms), watermark_ms, int(time.time() * 1000),
                              json.dumps(metrics or {}, sort_keys=True), bytes(blob)))
            self._db.execute("DELETE FROM versions WHERE model_key = ? AND pinned IS NULL AND version <= ?",
                             (model_key, last + 1 - self.keep))
        return self.get(model_key, last + 1)

    def latest(self, model_key, stage=None) -> Version | None:
        if stage is None:
            rows = self._db.execute(f"SELECT {_FIELDS} FROM versions WHERE model_key = ? "
                                    "ORDER BY version DESC LIMIT 1", (model_key,))
        else:
            _check_stage(stage)
            rows = self._db.execute(f"SELECT {_FIELDS} FROM versions WHERE model_key = ? AND stage = ? "
                                    "ORDER BY version DESC LIMIT 1", (model_key, stage))
        return _version(rows[0]) if rows else None

    def get(self, model_key, version) -> Version:
        rows = self._db.execute(f"SELECT {_FIELDS} FROM versions WHERE model_key = ? AND version = ?",
                                (model_key, int(version)))
        if not rows:
            raise UnknownVersion(f"no version {version} of model {model_key!r} in {self.path} "
                                 f"(held: {[v.version for v in self.versions(model_key)]})")
        return _version(rows[0])

    def blob(self, model_key, version) -> bytes:
        rows = self._db.execute("SELECT blob FROM versions WHERE model_key = ? AND version = ?",
                                (model_key, int(version)))
        if not rows:
            raise UnknownVersion(f"no version {version} of model {model_key!r} in {self.path}")
        return bytes(rows[0][0])

    def versions(self, model_key=None) -> list[Version]:
        if model_key is None:
            rows = self._db.execute(f"SELECT {_FIELDS} FROM versions ORDER BY model_key, version")
        else:
            rows = self._db.execute(f"SELECT {_FIELDS} FROM versions WHERE model_key = ? ORDER BY version",
                                    (model_key,))
        return [_version(r) for r in rows]

    def promote(self, model_key, version, stage) -> Version:
        _check_stage(stage)
        with self._db.transaction(model_key):
            self.get(model_key, version)
            self._db.execute("UPDATE versions SET stage = NULL WHERE model_key = ? AND stage = ?", (model_key, stage))
            self._db.execute("UPDATE versions SET stage = ?, pinned = COALESCE(pinned, ?) "
                             "WHERE model_key = ? AND version = ?", (stage, stage, model_key, int(version)))
        return self.get(model_key, version)

    def annotate(self, model_key, version, metrics) -> Version:
        """Adds `metrics` to a version's (e.g. an offline evaluation, its lineage); their names win."""
        with self._db.transaction(model_key):
            merged = {**self.get(model_key, version).metrics, **metrics}
            self._db.execute("UPDATE versions SET metrics = ? WHERE model_key = ? AND version = ?",
                             (json.dumps(merged, sort_keys=True), model_key, int(version)))
        return self.get(model_key, version)

    def pin(self, model_key, version, reason) -> Version:
        if not reason:
            raise ValueError("a pin needs a reason (it is kept until unpinned)")
        with self._db.transaction(model_key):
            self.get(model_key, version)
            self._db.execute("UPDATE versions SET pinned = ? WHERE model_key = ? AND version = ?",
                             (reason, model_key, int(version)))
        return self.get(model_key, version)

    def unpin(self, model_key, version) -> Version:
        """Unpins a version; it then goes with retention, unless it is still among the newest."""
        with self._db.transaction(model_key):
            unpinned = self.get(model_key, version)
            if unpinned.stage is not None:
                raise ValueError(f"version {version} of {model_key!r} is in {unpinned.stage}: a staged version "
                                 "stays pinned (promote another one to that stage first)")
            self._db.execute("UPDATE versions SET pinned = NULL WHERE model_key = ? AND version = ?",
                             (model_key, int(version)))
            [(last,)] = self._db.execute("SELECT MAX(version) FROM versions WHERE model_key = ?", (model_key,))
            self._db.execute("DELETE FROM versions WHERE model_key = ? AND pinned IS NULL AND version <= ?",
                             (model_key, last - self.keep))
        return dataclasses.replace(unpinned, pinned=None)

    def close(self):
        self._db.close()


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r} (stages: {', '.join(STAGES)})")


def _version(row) -> Version:
    return Version(*row[:6], json.loads(row[6]), *row[7:])
