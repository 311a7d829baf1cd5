"""The prequential job equals river's progressive_val_score, batch and streaming, any format."""
import json

import fastavro
import pandas as pd
import pytest
from river import datasets, evaluate

from core.scoring import METRICS
from models import factory
from pipelines import prequential

CASES = {
    # task: (river dataset, rows used, model spec)
    "binary": (datasets.Phishing, 600, "models.zoo:logistic_regression"),
    "multiclass": (datasets.ImageSegments, 400, "models.zoo:hoeffding_tree"),
    "regression": (datasets.TrumpApproval, 600, "models.zoo:linear_regression"),
}


def _rows(task):
    dataset, n, _ = CASES[task]
    return [{**x, "target": y} for (x, y), _ in zip(dataset(), range(n))]


def _write(rows, path, fmt):
    if fmt == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        fields = [{"name": k, "type": _avro_type(v)} for k, v in rows[0].items()]
        schema = {"type": "record", "name": "Row", "fields": fields}
        with open(path, "wb") as f:
            fastavro.writer(f, fastavro.parse_schema(schema), rows)


def _avro_type(value):
    return {bool: "boolean", int: "long", float: "double", str: "string"}[type(value)]


def _reference(task, rows):
    """river's progressive_val_score over the same rows, one metric at a time."""
    spec = CASES[task][2]
    stream = [({k: v for k, v in r.items() if k != "target"}, r["target"]) for r in rows]
    return {name: evaluate.progressive_val_score(stream, factory.build(spec), cls()).get()
            for name, cls in METRICS[task].items()}


def _run(tmp_path, task, fmt, *extra):
    rows = _rows(task)
    path = tmp_path / f"data.{fmt}"
    _write(rows, path, fmt)
    out = tmp_path / "out"
    prequential.run(["--input", str(path), "--target", "target", "--model", CASES[task][2],
                     "--output", str(out), *extra])
    return rows, json.loads((out / "metrics.json").read_text()), out


@pytest.mark.parametrize("task,fmt", [("binary", "csv"), ("multiclass", "jsonl"), ("regression", "avro")])
def test_batch_job_matches_progressive_val_score(tmp_path, task, fmt):
    rows, got, out = _run(tmp_path, task, fmt)
    want = _reference(task, rows)
    assert set(want) <= set(got)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name
    assert got["predictions"] == len(rows) and got["dead_letters"] == 0
    predictions = (out / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == len(rows)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_streaming_job_matches_progressive_val_score(tmp_path, task):
    rows, got, _ = _run(tmp_path, task, "csv", "--streaming")
    for name, value in _reference(task, rows).items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


def test_bad_rows_are_dead_letters_and_counted(tmp_path):
    rows = _rows("binary")[:100]
    lines = [json.dumps(r) for r in rows]
    lines[10] = "{not json"
    lines[20] = json.dumps({**rows[20], "target": None})
    lines[30] = "[1, 2]"
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    prequential.run(["--input", str(path), "--target", "target", "--output", str(out)])
    got = json.loads((out / "metrics.json").read_text())
    assert got["predictions"] == 97 and got["dead_letters"] == 3
    dead = [json.loads(line) for line in (out / "dead_letters.jsonl").read_text().splitlines()]
    assert sorted(d["stage"] for d in dead) == ["ReadRows", "ReadRows", "RowsToExamples"]
    assert any("missing target" in d["reason"] for d in dead)


def test_mini_batch_job_predicts_every_row(tmp_path):
    """`--mini_batch N` (opt-in, not per-event learning): every row predicted once, and the
    metrics stay close to per-event learning's."""
    rows, got, out = _run(tmp_path, "binary", "csv", "--mini_batch", "20", "--model",
                          "models.zoo:logistic_regression?learning_rate=0.5")
    assert got["predictions"] == len(rows) and got["dead_letters"] == 0
    assert got["rocauc"] > _reference("binary", rows)["rocauc"] - 0.05


# The task comes from the target's values (core/tasks.py), not from the model.

def _river(rows, spec, task):
    """river's progressive_val_score over `rows` with `task`'s metrics, one metric at a time."""
    stream = [({k: v for k, v in r.items() if k != "target"}, r["target"]) for r in rows]
    return {name: evaluate.progressive_val_score(stream, factory.build(spec), cls()).get()
            for name, cls in METRICS[task].items()}


def _job(tmp_path, rows, fmt, spec, *extra):
    path = tmp_path / f"data.{fmt}"
    _write(rows, path, fmt)
    out = tmp_path / "out"
    prequential.run(["--input", str(path), "--target", "target", "--model", spec, "--output", str(out), *extra])
    return json.loads((out / "metrics.json").read_text()), out


def _assert_equal(got, want):
    assert set(want) <= set(got)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


def test_multiclass_capable_classifier_over_a_binary_target_is_scored_as_binary(tmp_path):
    rows = _rows("binary")[:400]
    got, _ = _job(tmp_path, rows, "csv", "models.zoo:hoeffding_tree")
    assert got["task"] == "binary" and got["positive"] is True
    assert {"rocauc", "logloss"} <= set(got) and "macro_f1" not in got
    _assert_equal(got, _river(rows, "models.zoo:hoeffding_tree", "binary"))


def test_task_flag_overrides_the_target(tmp_path):
    rows = _rows("binary")[:400]
    got, _ = _job(tmp_path, rows, "csv", "models.zoo:hoeffding_tree", "--task", "multiclass")
    assert got["task"] == "multiclass" and "rocauc" not in got and "positive" not in got
    _assert_equal(got, _river(rows, "models.zoo:hoeffding_tree", "multiclass"))


@pytest.mark.parametrize("fmt,classes,spec,positive", [
    ("avro", (True, False), "models.zoo:hoeffding_tree", True),          # boolean
    ("jsonl", (1, 0), "models.zoo:logistic_regression", 1),             # 0/1 integers
    ("csv", ("yes", "no"), "models.zoo:logistic_regression", "yes"),    # text, binary-only model
    ("jsonl", ("yes", "no"), "models.zoo:hoeffding_tree", "yes"),       # text, multiclass-capable
])
def test_binary_targets_of_any_type_equal_river_over_booleans(tmp_path, fmt, classes, spec, positive):
    """A binary target is learned and scored as `value == positive`: the same metrics as river
    over the boolean target (river's ROCAUC and LogLoss read the probability of True)."""
    rows = _rows("binary")[:400]
    encoded = [{**r, "target": classes[0] if r["target"] else classes[1]} for r in rows]
    got, out = _job(tmp_path, encoded, fmt, spec)
    assert got["task"] == "binary" and got["positive"] == positive
    _assert_equal(got, _river(rows, spec, "binary"))
    first = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    assert first["y_true"] is rows[int(first["event_id"])]["target"]


def test_positive_flag_picks_the_positive_class(tmp_path):
    rows = [{**r, "target": "yes" if r["target"] else "no"} for r in _rows("binary")[:300]]
    got, _ = _job(tmp_path, rows, "jsonl", "models.zoo:logistic_regression", "--positive", "no")
    assert got["positive"] == "no"
    flipped = [{**r, "target": r["target"] == "no"} for r in rows]
    _assert_equal(got, _river(flipped, "models.zoo:logistic_regression", "binary"))


def _parse(tmp_path, rows, fmt, *extra):
    path = tmp_path / f"data.{fmt}"
    _write(rows, path, fmt)
    return prequential.parse_args(["--input", str(path), "--target", "target", "--output", str(tmp_path / "out"),
                                   *extra])[0]


@pytest.mark.parametrize("task,spec,says", [
    ("binary", "models.zoo:linear_regression", "is a regressor but the target is binary (2 classes: False, True)"),
    ("multiclass", "models.zoo:logistic_regression", "is a binary-only classifier but the target is multiclass"),
    ("regression", "models.zoo:hoeffding_tree", "is a classifier but the target is regression"),
])
def test_a_model_that_cannot_learn_the_target_is_one_line_and_exit_2(tmp_path, capsys, task, spec, says):
    with pytest.raises(SystemExit) as stop:
        _parse(tmp_path, _rows(task)[:100], "csv", "--model", spec)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and says in err, err


@pytest.mark.parametrize("extra,says", [
    (["--task", "binary"], "needs --positive CLASS"),
    (["--positive", "cement"], "--positive is for a binary task"),
    (["--task", "binary", "--positive", "gravel"], "--positive 'gravel' is not a class"),
    (["--task", "regression", "--model", "models.zoo:linear_regression"], "needs a numeric target"),
])
def test_bad_task_flags_are_one_line_and_exit_2(tmp_path, capsys, extra, says):
    with pytest.raises(SystemExit) as stop:
        _parse(tmp_path, _rows("multiclass")[:100], "jsonl", "--model", "models.zoo:hoeffding_tree", *extra)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and says in err, err


def test_one_vs_rest_with_task_binary_and_positive(tmp_path):
    args = _parse(tmp_path, _rows("multiclass")[:100], "jsonl", "--model", "models.zoo:hoeffding_tree",
                  "--task", "binary", "--positive", "cement")
    assert (args.task, args.positive, args.encode) == ("binary", "cement", True)


@pytest.mark.parametrize("targets,fmt,task", [
    ([0.5, 1.25, 3.0], "csv", "regression"),            # floats
    ([1.0, 2.0, 3.0, 4.0], "jsonl", "multiclass"),      # integral floats: a few integers
    (list(range(50)), "csv", "regression"),             # many integers: a quantity
    ([3, 1, 2], "avro", "multiclass"),                  # a few integers: classes
    (["a", "b", "c"], "csv", "multiclass"),
    (["no", "yes"], "csv", "binary"),
])
def test_the_task_is_inferred_from_the_target(tmp_path, targets, fmt, task):
    rows = [{"x": float(i), "target": targets[i % len(targets)]} for i in range(100)]
    spec = "models.zoo:linear_regression" if task == "regression" else "models.zoo:hoeffding_tree"
    assert _parse(tmp_path, rows, fmt, "--model", spec).task == task


def test_regression_inferred_from_floats_matches_river(tmp_path):
    rows = _rows("regression")[:300]
    got, _ = _job(tmp_path, rows, "jsonl", "models.zoo:linear_regression")
    assert got["task"] == "regression"
    _assert_equal(got, _river(rows, "models.zoo:linear_regression", "regression"))
