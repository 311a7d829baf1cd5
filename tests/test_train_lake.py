"""Offline training from the data lake's curated table, and in more than one pass."""
import glob
import json

import pyarrow.parquet as pq
import pytest

import simulator
from core.interactions import impression_features
from core.publishing import load_version
from models import factory, serde
from pipelines import curate, land, train
from stores.registry import open_registry

START = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SPLIT, EVAL_UNTIL = "2026-01-01T01:30:00Z", "2026-01-01T02:15:00Z"  # every held-out label known in the lake


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """Three hours of simulated history (no drift), landed and curated; (events file, lake)."""
    root = tmp_path_factory.mktemp("lake")
    events = root / "history.avro"
    simulator.write_avro(simulator.generate(simulator.SimulatorConfig(
        impressions=6000, users=100, drift_at=1.0, start_ms=START, mean_gap_ms=1800.0)), str(events))
    land.run(["--events", str(events), "--lake", str(root / "lake")])
    curate.run(["--lake", str(root / "lake")])
    return events, root / "lake"


def _train(out, *flags):
    return train.run(["--registry", str(out / "registry.sqlite"), "--output", str(out), "--split", SPLIT,
                      "--eval_until", EVAL_UNTIL, *flags])


def _registered(out, version):
    registry = open_registry(str(out / "registry.sqlite"))
    return load_version(registry, registry.get("recommender", version), serde.store_key(registry.path))


def _held_out(out):
    return [json.loads(line) for line in open(out / "held_out.jsonl")]


def test_training_from_the_lake_learns_the_model_the_events_give(lake, tmp_path):
    events, root = lake
    from_events = _train(tmp_path / "events", "--events", str(events))
    from_lake = _train(tmp_path / "lake", "--lake", str(root))
    assert from_lake["step"] == from_events["step"] > 1000
    assert from_lake["held_out"] == from_events["held_out"] and from_lake["held_out"]["examples"] > 1000
    assert from_lake["lineage"]["lake"] == str(root) and from_lake["lineage"]["passes"] == 1
    a, b = _registered(tmp_path / "events", from_events["version"]), _registered(tmp_path / "lake", from_lake["version"])
    held_out = _held_out(tmp_path / "lake")
    assert sorted(held_out, key=lambda e: e["event_id"]) == sorted(_held_out(tmp_path / "events"),
                                                                   key=lambda e: e["event_id"])
    assert [a.predict_proba_one(e["x"]) for e in held_out] == [b.predict_proba_one(e["x"]) for e in held_out]


def test_passes_learn_the_training_range_again_in_order(lake, tmp_path):
    """Two passes from the lake: the registered model is bare river learning the curated training
    rows twice, in (label time, impression id) order."""
    _, root = lake
    done = _train(tmp_path, "--lake", str(root), "--passes", "2")
    rows = [r for f in glob.glob(f"{root}/curated/parquet/labelled_impressions/date=*/*.parquet")
            for r in pq.read_table(f).to_pylist()]
    split = train.event_time_arg(SPLIT)
    training = sorted((r for r in rows if r["labelled_at"] < split), key=lambda r: (r["labelled_at"], r["impression_id"]))
    assert done["step"] == 2 * len(training) and done["lineage"]["passes"] == 2
    bare = factory.build("models.zoo:recommender")
    for _ in range(2):
        for r in training:
            bare.learn_one(impression_features({**r, "features": dict(r["features"])}), r["label"])
    registered = _registered(tmp_path, done["version"])
    held_out = _held_out(tmp_path)
    assert [registered.predict_proba_one(e["x"]) for e in held_out] == [bare.predict_proba_one(e["x"]) for e in held_out]
    one_pass = _train(tmp_path / "one", "--lake", str(root))
    assert one_pass["held_out"] != done["held_out"]  # a second pass changes the model
