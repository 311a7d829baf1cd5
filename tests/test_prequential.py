"""The prequential job equals river's progressive_val_score, batch and streaming, any format."""
import json

import fastavro
import pandas as pd
import pytest
from river import datasets, evaluate, metrics as river_metrics

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
