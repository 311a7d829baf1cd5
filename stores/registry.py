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

`Registry` is the interface; `open_registry(location)` picks the implementation (SQLite, the
embedded default; several processes may share one file).

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

from stores.sqlite import connect, sqlite_path

STAGES = ("candidate", "production")
KEEP = 10  # unpinned versions kept per model key, newest first

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    model_key TEXT NOT NULL, version INTEGER NOT NULL, step INTEGER NOT NULL, clock_ms INTEGER NOT NULL,
    watermark_ms INTEGER, published_ms INTEGER NOT NULL, metrics TEXT NOT NULL, stage TEXT, pinned TEXT,
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

    def unpin(self, model_key: str, version: int) -> Version: ...

    def close(self) -> None: ...


class UnknownVersion(LookupError):
    """Raised for a model key and version the registry does not hold (never, or no longer)."""


def open_registry(location: str, keep: int = KEEP) -> Registry:
    """The registry at `location`: a SQLite file path, or `sqlite:///relative` / `sqlite:////absolute`.

    >>> open_registry("redis://localhost:6379")
    Traceback (most recent call last):
    ...
    ValueError: no model registry for 'redis://' locations (have: SQLite file paths, sqlite:///PATH); implement stores.registry.Registry
    """
    return SQLiteRegistry(sqlite_path(location, "model registry", "stores.registry.Registry"), keep)


class SQLiteRegistry:
    """A `Registry` in one SQLite file (WAL: servers read while a learner publishes)."""

    def __init__(self, path: str, keep: int = KEEP):
        if keep < 1:
            raise ValueError(f"keep={keep}: a registry keeps at least the newest version of each model")
        self.path, self.keep = path, keep
        self._db = connect(path, _SCHEMA)

    def publish(self, model_key, blob, *, step, clock_ms, watermark_ms=None, metrics=None) -> Version:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")  # the next number, taken by one publisher at a time
            (last,) = self._db.execute("SELECT COALESCE(MAX(version), 0) FROM versions WHERE model_key = ?",
                                       (model_key,)).fetchone()
            self._db.execute(f"INSERT INTO versions ({_FIELDS}, blob) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?)",
                             (model_key, last + 1, int(step), int(clock_ms), watermark_ms, int(time.time() * 1000),
                              json.dumps(metrics or {}, sort_keys=True), bytes(blob)))
            self._db.execute("DELETE FROM versions WHERE model_key = ? AND pinned IS NULL AND version <= ?",
                             (model_key, last + 1 - self.keep))
        return self.get(model_key, last + 1)

    def latest(self, model_key, stage=None) -> Version | None:
        if stage is not None:
            _check_stage(stage)
        row = self._db.execute(f"SELECT {_FIELDS} FROM versions WHERE model_key = ? AND (? IS NULL OR stage = ?) "
                               "ORDER BY version DESC LIMIT 1", (model_key, stage, stage)).fetchone()
        return _version(row) if row else None

    def get(self, model_key, version) -> Version:
        row = self._db.execute(f"SELECT {_FIELDS} FROM versions WHERE model_key = ? AND version = ?",
                               (model_key, int(version))).fetchone()
        if row is None:
            raise UnknownVersion(f"no version {version} of model {model_key!r} in {self.path} "
                                 f"(held: {[v.version for v in self.versions(model_key)]})")
        return _version(row)

    def blob(self, model_key, version) -> bytes:
        row = self._db.execute("SELECT blob FROM versions WHERE model_key = ? AND version = ?",
                               (model_key, int(version))).fetchone()
        if row is None:
            raise UnknownVersion(f"no version {version} of model {model_key!r} in {self.path}")
        return row[0]

    def versions(self, model_key=None) -> list[Version]:
        rows = self._db.execute(f"SELECT {_FIELDS} FROM versions WHERE ? IS NULL OR model_key = ? "
                                "ORDER BY model_key, version", (model_key, model_key)).fetchall()
        return [_version(r) for r in rows]

    def promote(self, model_key, version, stage) -> Version:
        _check_stage(stage)
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self.get(model_key, version)
            self._db.execute("UPDATE versions SET stage = NULL WHERE model_key = ? AND stage = ?", (model_key, stage))
            self._db.execute("UPDATE versions SET stage = ?, pinned = COALESCE(pinned, ?) "
                             "WHERE model_key = ? AND version = ?", (stage, stage, model_key, int(version)))
        return self.get(model_key, version)

    def pin(self, model_key, version, reason) -> Version:
        if not reason:
            raise ValueError("a pin needs a reason (it is kept until unpinned)")
        self.get(model_key, version)
        self._db.execute("UPDATE versions SET pinned = ? WHERE model_key = ? AND version = ?",
                         (reason, model_key, int(version)))
        return self.get(model_key, version)

    def unpin(self, model_key, version) -> Version:
        """Unpins a version; it then goes with retention, unless it is still among the newest."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            unpinned = self.get(model_key, version)
            if unpinned.stage is not None:
                raise ValueError(f"version {version} of {model_key!r} is in {unpinned.stage}: a staged version "
                                 "stays pinned (promote another one to that stage first)")
            self._db.execute("UPDATE versions SET pinned = NULL WHERE model_key = ? AND version = ?",
                             (model_key, int(version)))
            (last,) = self._db.execute("SELECT MAX(version) FROM versions WHERE model_key = ?",
                                       (model_key,)).fetchone()
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
