"""One contract over every model factory the jobs can name: fresh, deterministic, valid
probabilities, pristine copies, signed-state round trip, each on data of its kind."""
import inspect
import itertools
import json

import pytest
from river import datasets

import simulator
from core.features import reference_features
from core.interactions import POSITIVE, impression_features, invalid_reason
from models import factory, serde, zoo


def _callable_without_arguments(fn):
    return all(p.default is not p.empty for p in inspect.signature(fn).parameters.values())


# Every zoo factory that builds with its defaults (the jobs' recommender and logistic regression
# take keyword arguments), and the job's popularity baseline.
FACTORIES = [f"models.zoo:{name}" for name, fn in inspect.getmembers(zoo, inspect.isfunction)
             if fn.__module__ == zoo.__name__ and _callable_without_arguments(fn)] + ["models.baselines:popularity"]
RECOMMENDATION = {"models.zoo:recommender", "models.zoo:one_hot_recommender", "models.baselines:popularity"}
LEARNS_NOTHING = {"models.baselines:popularity"}  # predicts the item's click-rate feature


def _recommendation_examples(n=400):
    """Impressions of the simulator with the job's features (ids and context as text, genres
    and point-in-time entity features as numbers), labelled by their clicks and watches."""
    config = simulator.SimulatorConfig(impressions=n, users=30, items=40, seed=2, late_fraction=0.0,
                                       malformed_fraction=0.0)
    events = [e for e in simulator.generate(config) if invalid_reason(e) is None]
    entity = reference_features(events)
    positive = {e["impression_id"] for e in events if e["event_type"] in POSITIVE}
    return [({**impression_features(e), **entity[e["event_id"]]}, e["event_id"] in positive)
            for e in sorted(events, key=lambda e: (e["event_time"], e["event_id"]))
            if e["event_type"] == "impression"]


DATA = {"binary": datasets.Phishing, "multiclass": datasets.ImageSegments, "regression": datasets.TrumpApproval}


def _examples(spec, task, n=400):
    if spec in RECOMMENDATION:
        return _recommendation_examples(n)
    return list(itertools.islice(DATA[task](), n))


def _predict(model, x, task):
    return model.predict_one(x) if task == "regression" else model.predict_proba_one(x)


def _check_prediction(p, task, where):
    if task == "regression":
        assert isinstance(p, float), (where, p)
        return
    assert p, f"{where}: no probabilities"
    assert all(0.0 <= v <= 1.0 for v in p.values()), (where, p)
    assert abs(sum(p.values()) - 1.0) < 1e-9, (where, p)


def test_the_jobs_models_are_under_the_contract(tmp_path):
    from pipelines import prequential, recommend

    rows = tmp_path / "rows.csv"
    rows.write_text("f,y\n1.0,1\n")
    jobs = {recommend.parse_args([])[0].model, recommend.POPULARITY,
            prequential.parse_args(["--input", str(rows), "--target", "y", "--output", str(tmp_path)])[0].model}
    assert {spec.partition("?")[0] for spec in jobs} <= set(FACTORIES)


@pytest.mark.parametrize("spec", FACTORIES)
def test_factory_contract(spec):
    a, b = factory.build(spec), factory.build(spec)
    assert a is not b, "a factory must return a fresh model each call"
    task = factory.task_of(a)
    examples = _examples(spec, task)
    probes = [x for x, _ in examples[::40]]
    pristine = [_predict(factory.build(spec), x, task) for x in probes]
    fresh = factory.Fresh(spec)
    c = fresh()
    # Two builds that learn the same events predict alike, to the last bit, at every step.
    for i, (x, y) in enumerate(examples[:-50]):
        pa, pb = _predict(a, x, task), _predict(b, x, task)
        assert pa == pb, f"two builds differ at event {i}: {pa} != {pb}"
        if i:
            _check_prediction(pa, task, f"event {i}")
        for model in (a, b, c):
            model.learn_one(x, y)
    learned = [_predict(a, x, task) for x in probes]
    if spec not in LEARNS_NOTHING:
        assert learned != pristine, "learning changed no prediction: the checks below could not fail"
    # Copies of a model are pristine: river's clone, and the learner's fresh copies.
    assert [_predict(a.clone(), x, task) for x in probes] == pristine
    assert [_predict(fresh(), x, task) for x in probes] == pristine
    assert [_predict(c, x, task) for x in probes] == learned
    # Signed state restores the model whole: the same predictions, and the same ones after
    # both go on learning.
    keys = serde.keyring("k" * 32)
    restored = serde.loads(serde.dumps(a, keys), keys)
    assert [_predict(restored, x, task) for x in probes] == learned
    for x, y in examples[-50:]:
        assert _predict(restored, x, task) == _predict(a, x, task)
        restored.learn_one(x, y)
        a.learn_one(x, y)
    assert [_predict(restored, x, task) for x in probes] == [_predict(a, x, task) for x in probes]
    with pytest.raises(serde.TamperedState):
        serde.loads(serde.dumps(a, keys), serde.keyring("another key" * 3))


def test_the_zoo_covers_every_task():
    assert {factory.task_of(factory.build(s)) for s in FACTORIES} == set(factory.TASKS)


_PREDICT_AND_LEARN = r'''
import json
from models import zoo
import simulator
from core.interactions import impression_features, invalid_reason
model, out = zoo.recommender(), []
config = simulator.SimulatorConfig(impressions=300, seed=2)
for e in simulator.generate(config):
    if invalid_reason(e) is None and e["event_type"] == "impression":
        x = {**impression_features(e), "u_ctr_24h": (len(out) % 7) / 7.0}
        out.append(repr(model.predict_proba_one(x)[True]))
        model.learn_one(x, len(out) % 3 == 0)
print(json.dumps(out))
'''


def test_the_recommender_predicts_alike_in_every_process():
    """String hashing differs per process (a restarted job, a Flink worker): the model's
    predictions must not, to the last bit. With river's Select (a set of keys) 2 and 23 of
    these 299 predictions differed between hash seeds."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    runs = [subprocess.run([sys.executable, "-c", _PREDICT_AND_LEARN], cwd=ROOT, capture_output=True, text=True,
                           env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}, check=True).stdout
            for seed in ("1", "2", "3")]
    assert len(json.loads(runs[0])) > 200
    assert runs[0] == runs[1] == runs[2]
