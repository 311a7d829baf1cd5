"""One contract over every model factory in the zoo: fresh, typed, signed-state round trip."""
import inspect
import json

import pytest

from models import factory, serde, zoo

FACTORIES = [f"models.zoo:{name}" for name, fn in inspect.getmembers(zoo, inspect.isfunction)
             if fn.__module__ == zoo.__name__ and not inspect.signature(fn).parameters]


@pytest.mark.parametrize("spec", FACTORIES)
def test_factory_contract(spec):
    a, b = factory.build(spec), factory.build(spec)
    assert a is not b, "a factory must return a fresh model each call"
    task = factory.task_of(a)
    x, y = {"f": 1.0, "g": 0.5}, (1.0 if task == "regression" else True)
    for _ in range(3):
        a.learn_one(x, y)
    restored = serde.loads(serde.dumps(a, key=b"k"), key=b"k")
    assert restored.predict_one(x) == a.predict_one(x)
    with pytest.raises(serde.TamperedState):
        serde.loads(serde.dumps(a, key=b"k"), key=b"other key")


def test_the_zoo_covers_every_task():
    assert {factory.task_of(factory.build(s)) for s in FACTORIES} == set(factory.TASKS)


_PREDICT_AND_LEARN = r'''
import json
from models import zoo
from pipelines import simulate
from transforms.interactions import impression_features, invalid_reason
model, out = zoo.recommender(), []
config = simulate.SimulatorConfig(impressions=300, seed=2)
for e in simulate.generate(config):
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
