"""Offline training: a time split that leaks nothing, held-out scores, registration and promotion."""
import json

import fastavro
import pytest

import schemas
from core.decoding import parse_event_time
from core.publishing import load_version
from models import serde
from pipelines import train
from pipelines.console import UserError
from stores.registry import open_registry

SPLIT = "2026-01-01T00:40:00Z"


def _train(events, out, *flags):
    return train.run(["--events", str(events), "--registry", str(out / "registry.sqlite"), "--output", str(out),
                      *flags])


def _model(out, version):
    registry = open_registry(str(out / "registry.sqlite"))
    return load_version(registry, registry.get("recommender", version), serde.store_key(registry.path))


def test_nothing_after_the_split_reaches_the_model(history, tmp_path):
    """The same history, with every outcome after the split dropped: the same model. Moving the
    split changes it (the comparison can fail)."""
    split = parse_event_time(SPLIT)
    with open(history, "rb") as f:
        records = list(fastavro.reader(f))
    cut = tmp_path / "cut.avro"
    with open(cut, "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(schemas.load("interaction")),
                        [r for r in records if r["event_type"] == "impression" or r["event_time"] < split])
    a = _train(history, tmp_path / "a", "--split", SPLIT)
    b = _train(cut, tmp_path / "b", "--split", SPLIT)
    c = _train(history, tmp_path / "c", "--split", "2026-01-01T00:50:00Z")
    held_out = [json.loads(line) for line in open(tmp_path / "a" / "held_out.jsonl")]
    assert held_out and all(e["event_time"] >= split for e in held_out)
    models = [_model(tmp_path / name, 1) for name in ("a", "b", "c")]
    probabilities = [[m.predict_proba_one(e["x"])[True] for e in held_out[:300]] for m in models]
    assert probabilities[0] == probabilities[1] and a["step"] == b["step"]
    assert probabilities[0] != probabilities[2] and c["step"] > a["step"]
    assert a["held_out"]["examples"] == len(held_out) and 0.5 < a["held_out"]["rocauc"] < 1


def test_registered_with_scores_and_lineage_pinned_and_promoted_if_better(history, tmp_path):
    out = tmp_path / "out"
    first = _train(history, out, "--split", SPLIT, "--promote_if_better")
    registry = open_registry(str(out / "registry.sqlite"))
    version = registry.get("recommender", first["version"])
    assert version.metrics["held_out"] == first["held_out"] and version.metrics["lineage"]["split_ms"] == \
        parse_event_time(SPLIT)
    assert (version.pinned, version.stage) == ("offline", "production") and first["production"] == "v1"
    # A model that learned less (an earlier split), judged on its own held-out range against v1 there.
    second = _train(history, out, "--split", "2026-01-01T00:35:00Z", "--eval_until", "2026-01-01T00:40:00Z",
                    "--model", "models.zoo:recommender?learning_rate=0.0001", "--promote_if_better")
    assert second["version"] == 2 and second["production"].startswith("v1 kept")
    assert registry.latest("recommender", "production").version == 1
    assert registry.latest("recommender", "candidate").version == 2 and registry.get("recommender", 2).pinned
    with pytest.raises(UserError, match="nothing to evaluate"):
        _train(history, out, "--split", "2027-01-01T00:00:00Z")
    with pytest.raises(UserError, match="nothing to learn"):
        _train(history, out, "--split", "2026-01-01T00:10:00Z")
    assert registry.latest("recommender").version == 2  # neither registered anything
    # A registered version, frozen, on a range: the scores training gave it there, nothing registered.
    judged = _train(history, tmp_path / "judge", "--registry", str(out / "registry.sqlite"), "--split", SPLIT,
                    "--evaluate", "1")
    assert judged["held_out"] == first["held_out"] and registry.latest("recommender").version == 2
