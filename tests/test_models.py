"""One contract over every model factory in the zoo: fresh, typed, signed-state round trip."""
import inspect

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
