"""Warm start: the learner begins from a registered model version and keeps learning, exactly as
bare river continuing from that model would."""
import copy
import json

import apache_beam as beam
import fastavro
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from core import warmstart
from core.interactions import impression_features
from core.publishing import load_version
from core.requests import request_fields
from models import factory, serde
from pipelines import recommend
from pipelines.options import pipeline_options
from stores.registry import open_registry
from tests.conftest import BINARY, phishing_examples
from transforms.learning.learn_online import LearnOnline


def test_the_learner_continues_from_the_registered_model_as_bare_river_does(tmp_path):
    examples = phishing_examples(400)
    offline = factory.build(BINARY)
    for e in examples[:200]:  # the "offline" model: the first half learned before
        offline.learn_one(e.x, e.y)
    where = str(tmp_path / "registry.sqlite")
    registry = open_registry(where)
    version = registry.publish("default", serde.dumps(offline, serde.store_key(where)), step=200, clock_ms=1)
    registry.close()

    reference, expected = copy.deepcopy(offline), []
    for step, e in enumerate(examples[200:]):  # bare river, going on from it
        expected.append((e.event_id, step, round(reference.predict_proba_one(e.x)[True], 12)))
        reference.learn_one(e.x, e.y)
    with TestPipeline(options=pipeline_options([])) as p:
        out = (p | beam.Create([beam.window.TimestampedValue(e, e.event_time / 1000) for e in examples[200:]])
               | LearnOnline({"default": warmstart.spec(where, "default", version.version)}))
        assert_that(out.predictions | beam.Map(lambda r: (r.event_id, r.model_step, round(r.y_proba[True], 12))),
                    equal_to(expected))
    # Its first prediction is the registered model's own, not the untrained model's.
    assert expected[0][2] == round(offline.predict_proba_one(examples[200].x)[True], 12)
    assert expected[0][2] != round(factory.build(BINARY).predict_proba_one(examples[200].x)[True], 12)


def test_the_main_job_warm_starts_from_a_registered_version(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    recommend.run(["--impressions", "600", "--seed", "3", "--output", str(first), "--no_baselines"])
    registry = open_registry(str(first / "registry.sqlite"))
    version = registry.latest("recommender")
    model = load_version(registry, version, serde.store_key(registry.path))
    registry.close()
    summary = recommend.run(["--impressions", "600", "--seed", "4", "--output", str(second), "--no_baselines",
                             "--warm_start", "latest", "--warm_from", str(first / "registry.sqlite")])
    assert summary["counts"]["predictions"] > 0
    # The first impression predicted has no history before it: its features are those of new entities.
    predictions = [json.loads(line) for line in open(second / "predictions.jsonl")]
    got = min(predictions, key=lambda p: (p["event_time"], p["event_id"]))
    with open(second / "events.avro", "rb") as f:
        head = next(r for r in fastavro.reader(f) if r["event_id"] == got["event_id"])
    x = impression_features(request_fields({k: head[k] for k in ("user_id", "item_id", "item_genres", "position",
                                                                  "device")}, head["event_time"], {}))
    assert got["model_step"] == 0 and got["model_key"] == "recommender"
    assert got["y_proba"]["True"] == pytest.approx(model.predict_proba_one(x)[True], rel=1e-12)
    assert got["y_proba"]["True"] != pytest.approx(0.1, rel=1e-6)  # not the cold model's prior
    with pytest.raises(SystemExit):  # a version that is not there: a clear error before the job
        recommend.run(["--output", str(second), "--warm_start", "99", "--warm_from", str(first / "registry.sqlite")])
