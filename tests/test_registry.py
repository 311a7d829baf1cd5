"""The model registry: versions only increase, retention keeps the newest and the pinned,
stages hold one version each, and only verified bytes load."""
import multiprocessing
import sqlite3

import psycopg
import pytest
from river import linear_model

from models import serde
from core.publishing import load_version
from stores.registry import UnknownVersion, open_registry

KEYS = serde.keyring("r" * 32)


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    """Where a registry lives: a SQLite file, or a new database on the PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "registry.sqlite")
    return request.getfixturevalue("postgres_url")


def _model(steps: int):
    model = linear_model.LogisticRegression()
    for i in range(steps):
        model.learn_one({"x": i % 3}, i % 2 == 0)
    return model


def _publish_many(path: str, who: str, n: int) -> None:
    registry = open_registry(path, keep=100)
    for i in range(n):
        registry.publish("clicks", serde.dumps(_model(1), KEYS), step=i, clock_ms=i, metrics={"who": who})
    registry.close()


def test_versions_from_several_processes_are_distinct_and_increasing(location):
    path = location
    open_registry(path).close()
    workers = [multiprocessing.get_context("spawn").Process(target=_publish_many, args=(path, w, 15))
               for w in ("a", "b")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    registry = open_registry(path, keep=100)
    held = registry.versions("clicks")
    assert [v.version for v in held] == list(range(1, 31))
    assert sorted(v.metrics["who"] for v in held) == ["a"] * 15 + ["b"] * 15
    assert [v.published_ms for v in held] == sorted(v.published_ms for v in held)


def test_retention_keeps_the_newest_and_the_pinned(location):
    registry = open_registry(location, keep=3)
    for step in range(1, 4):
        registry.publish("clicks", serde.dumps(_model(step), KEYS), step=step, clock_ms=step)
    registry.pin("clicks", 1, "known good")
    for step in range(4, 8):
        registry.publish("clicks", serde.dumps(_model(step), KEYS), step=step, clock_ms=step)
    assert [(v.version, v.pinned) for v in registry.versions("clicks")] == [
        (1, "known good"), (5, None), (6, None), (7, None)]
    # Unpinned and older than the newest three: it goes; its number is never given again.
    registry.unpin("clicks", 1)
    assert [v.version for v in registry.versions("clicks")] == [5, 6, 7]
    assert registry.publish("clicks", serde.dumps(_model(8), KEYS), step=8, clock_ms=8).version == 8
    with pytest.raises(UnknownVersion, match="no version 1 of model 'clicks'"):
        registry.get("clicks", 1)


def test_promote_moves_a_stage_and_pins(location):
    registry = open_registry(location, keep=1)
    registry.publish("clicks", serde.dumps(_model(1), KEYS), step=1, clock_ms=1)
    assert registry.latest("clicks", "production") is None
    registry.promote("clicks", 1, "production")
    for step in (2, 3):
        registry.publish("clicks", serde.dumps(_model(step), KEYS), step=step, clock_ms=step)
    assert registry.latest("clicks", "production").version == 1  # pinned: kept past keep=1
    registry.promote("clicks", 3, "production")
    registry.publish("clicks", serde.dumps(_model(4), KEYS), step=4, clock_ms=4)
    staged = {v.version: (v.stage, v.pinned) for v in registry.versions("clicks")}
    assert staged == {1: (None, "production"), 3: ("production", "production"), 4: (None, None)}
    with pytest.raises(ValueError, match="stays pinned"):
        registry.unpin("clicks", 3)
    with pytest.raises(ValueError, match="unknown stage 'live'"):
        registry.promote("clicks", 3, "live")
    with pytest.raises(UnknownVersion):
        registry.promote("clicks", 2, "candidate")  # gone with retention


def test_only_verified_bytes_load(location):
    registry = open_registry(location)
    trained = _model(50)
    version = registry.publish("clicks", serde.dumps(trained, KEYS), step=50, clock_ms=50)
    loaded = load_version(registry, version, KEYS)
    assert loaded.predict_proba_one({"x": 1}) == trained.predict_proba_one({"x": 1})
    with pytest.raises(serde.TamperedState, match="not one of the keys given"):
        load_version(registry, version, serde.keyring("o" * 32))
    # Someone with write access to the database changes the model.
    db = psycopg.connect(location, autocommit=True) if location.startswith("postgresql") else sqlite3.connect(location)
    blob = bytes(db.execute("SELECT blob FROM versions").fetchone()[0])
    db.execute("UPDATE versions SET blob = ?".replace("?", "%s" if location.startswith("postgresql") else "?"),
               (blob[:-1] + bytes([blob[-1] ^ 1]),))
    db.commit()
    with pytest.raises(serde.TamperedState, match="failed its signature check"):
        load_version(registry, version, KEYS)

