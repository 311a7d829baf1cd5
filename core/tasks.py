"""The learning task of a target column, from its values: binary, multiclass or regression.

The rules, in order, over the target's distinct values (missing ones, None and NaN, left out;
they are dead letters anyway):

1. no values at all: no task (the caller falls back to what the model says it is);
2. numbers only (bools are not numbers here), one of them with a fractional part: regression;
3. at most two values: binary (booleans, 0/1, two strings such as "no"/"yes", any two ints);
4. integers only (3.0 counts as an integer) and more than `MAX_INTEGER_CLASSES` of them, or
   more than `MAX_DISTINCT` values: regression (counts, prices in cents, years);
5. anything else (text, or a few integers): multiclass.

Text never becomes regression, however many classes it has. `--task` overrides all of it.

The positive class of a binary target (what ROC AUC and log loss score) is True (or 1) when
the classes are bool-like (True/False, 0/1), else the last of the two in sorted order ("yes"
of no/yes, "true" of false/true, "pos" of neg/pos, "1" of "0"/"1"); `--positive` overrides it.
A binary target is learned as `value == positive` (True/False), so river's binary metrics and
binary-only classifiers take it as they take booleans.

>>> infer({True, False}), infer({"no", "yes"}), infer({0, 1}), infer({0.0, 1.0})
('binary', 'binary', 'binary', 'binary')
>>> infer({"cat", "dog", "fish"}), infer({1, 2, 3}), infer(set(range(11)))
('multiclass', 'multiclass', 'regression')
>>> infer({0.5, 1.5}), infer({1.0, 2.25, 3.0}), infer(set()) is None
('regression', 'regression', True)
>>> positive_class({False, True}), positive_class({0, 1}), positive_class({"no", "yes"})
(True, 1, 'yes')
>>> positive_class({"churn", "stay"}, "churn")
'churn'
"""
from __future__ import annotations

import csv
import io
import json
import math

import pandas as pd

from core import avro

TASKS = ("binary", "multiclass", "regression")
MAX_INTEGER_CLASSES = 10  # integers: up to this many distinct values are classes, more a quantity
MAX_DISTINCT = 1000  # the first pass keeps at most this many distinct values


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integral(value) -> bool:
    return isinstance(value, int) or float(value).is_integer()


def _bool_like(value) -> bool:
    return isinstance(value, (bool, int, float)) and value in (0, 1)


def _order(value):
    return (0, value) if isinstance(value, (bool, int, float)) else (1, str(value))


def infer(values: set, complete: bool = True) -> str | None:
    """The task of a target whose distinct values are `values` (`complete`: False when the
    first pass stopped at `MAX_DISTINCT` values); None when there is none."""
    values = {v for v in values if not is_missing(v)}
    if not values:
        return None
    numeric = all(_number(v) for v in values)
    if numeric and not all(_integral(v) for v in values):
        return "regression"
    if len(values) <= 2 and complete:
        return "binary"
    if not complete or (numeric and len(values) > MAX_INTEGER_CLASSES):
        return "regression" if numeric else "multiclass"
    return "multiclass"


def positive_class(values: set, given: str | None = None):
    """The positive class of a binary target: `given` (text, matched against the classes'
    text), else True/1 for bool-like classes, else the last of the two in sorted order."""
    values = {v for v in values if not is_missing(v)}
    if given is not None:
        for value in sorted(values, key=_order):
            if str(value) == given or (isinstance(value, bool) and str(value).lower() == given.lower()):
                return value
        raise ValueError(f"--positive {given!r} is not a class of the target ({describe(values)})")
    if len(values) > 2:
        raise ValueError(f"a binary task over a target with {describe(values)} needs --positive CLASS")
    if all(_bool_like(v) for v in values):
        return next((v for v in values if v == 1), True)
    return max(values, key=_order)


def check(model_task: str, task: str, values: set) -> None:
    """Raises ValueError (one line) when a model of `model_task` (`models.factory.task_of`)
    cannot learn a `task` target with these values. A multiclass-capable classifier learns a
    binary target (and is scored as binary); a binary-only one cannot learn a multiclass one.

    >>> check("multiclass", "binary", {True, False})
    >>> check("binary", "multiclass", {"a", "b", "c"})
    Traceback (most recent call last):
    ...
    ValueError: the model is a binary-only classifier but the target is multiclass (3 classes: 'a', 'b', 'c'): give a multiclass classifier (or another --task)
    """
    values = {v for v in values if not is_missing(v)}
    if task == "regression" and not all(_number(v) or isinstance(v, bool) for v in values):
        raise ValueError(f"--task regression needs a numeric target, not one with {describe(values)}")
    what = {"regression": "a regressor", "binary": "a binary-only classifier",
            "multiclass": "a classifier"}[model_task]
    if model_task == "regression" and task != "regression":
        fix = "a classifier"
    elif model_task != "regression" and task == "regression":
        fix = "a regressor"
    elif model_task == "binary" and task == "multiclass":
        fix = "a multiclass classifier"
    else:
        return
    raise ValueError(f"the model is {what} but the target is {task} ({describe(values)}): "
                     f"give {fix} (or another --task)")


def describe(values: set, complete: bool = True) -> str:
    """A few words on a target's values, for messages.

    >>> describe({"yes", "no"}), describe({0.5, 1.5, 2.5, 3.5, 4.5, 5.5})
    ("2 classes: 'no', 'yes'", '6 distinct numbers, e.g. 0.5, 1.5, 2.5, 3.5, 4.5, ...')
    """
    values = sorted((v for v in values if not is_missing(v)), key=_order)
    if not values:
        return "no values"
    more = "" if complete else "+"
    if all(_number(v) for v in values) and len(values) > 2:
        shown = ", ".join(map(repr, values[:5])) + (", ..." if len(values) > 5 else "")
        return f"{len(values)}{more} distinct numbers, e.g. {shown}"
    shown = ", ".join(map(repr, values[:5])) + (", ..." if len(values) > 5 else "")
    return f"{len(values)}{more} classes: {shown}"


def distinct_values(stream, fmt: str, field: str, cap: int = MAX_DISTINCT) -> tuple[set, bool]:
    """(the distinct values of `field` in a file, whether all were seen): one streaming pass
    over a binary file object, keeping only the distinct values, stopping at `cap` of them.
    Values have the types the job's rows give them (`core.decoding.records`); records that
    cannot be decoded are skipped (they are dead letters in the job).

    >>> values, complete = distinct_values(io.BytesIO(b'{"y": "b"}\\n{"y": null}\\n{"y": "a"}\\n'), "jsonl", "y")
    >>> sorted(values), complete
    (['a', 'b'], True)
    >>> sorted(map(repr, distinct_values(io.BytesIO(b"x,y\\n1,1\\n2,\\n3,0\\n"), "csv", "y")[0]))
    ['0.0', '1.0']
    """
    if fmt == "csv":
        return _csv_values(stream, field, cap)
    values: set = set()
    for fields in (_avro_fields(stream) if fmt == "avro" else _jsonl_fields(stream)):
        value = fields.get(field)
        if is_missing(value):
            continue
        try:
            values.add(value)
        except TypeError:  # unhashable (a JSON list or object): a class by its text
            values.add(json.dumps(value, sort_keys=True))
        if len(values) >= cap:
            return values, False
    return values, True


def _avro_fields(stream):
    header = avro.read_header(stream, getattr(stream, "name", "the input"))
    return (fields for _, fields, error, _ in avro.records(stream, header) if error is None)


def _jsonl_fields(stream):
    for line in stream:
        try:
            fields = json.loads(line) if line.strip() else None
        except (ValueError, RecursionError):  # a dead letter in the job
            continue
        if isinstance(fields, dict):
            yield fields


def _csv_values(stream, field: str, cap: int) -> tuple[set, bool]:
    """The column's distinct texts in chunks, then typed as pandas types the whole column: the
    type pandas infers for a column depends only on the set of its texts (and whether one is
    missing), so a one-column CSV of the distinct texts types them as the job's full read."""
    texts, missing, complete = set(), False, True
    try:
        chunks = pd.read_csv(stream, engine="python", usecols=[field], dtype=str, chunksize=65536,
                             on_bad_lines="skip")
        for chunk in chunks:
            for text in chunk[field].tolist():
                if is_missing(text):
                    missing = True
                else:
                    texts.add(text)
            if len(texts) >= cap:
                complete = False
                break
    except (ValueError, pd.errors.EmptyDataError):  # no such column, or an empty file
        return set(), True
    lines = io.StringIO()
    writer = csv.writer(lines, lineterminator="\n")
    # A second column, so that a missing value is an empty field, not a skipped blank line.
    writer.writerows([[field, "_"], *([t, 0] for t in sorted(texts)), *([["", 0]] if missing else [])])
    lines.seek(0)
    typed = pd.read_csv(lines, engine="python")[field].tolist()
    return {v for v in typed if not is_missing(v)}, complete
