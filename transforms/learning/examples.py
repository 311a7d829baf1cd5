"""Rows to learner `Example`s: pick the target, the features and the model key."""
from __future__ import annotations

import json
import math
from typing import NamedTuple, Sequence

import apache_beam as beam

from core.records import DeadLetter, Example
from transforms import coders  # noqa: F401  (registers the record coders)

DEAD_LETTERS = "dead_letters"


class ExampleOutputs(NamedTuple):
    examples: beam.PCollection
    dead_letters: beam.PCollection


class RowsToExamples(beam.PTransform):
    """`Row` -> `Example`: features are every field but the target and the `exclude`d ones.

    A row without the target field, or with a missing target value, is a dead letter.

    Args:
        target: the label field.
        exclude: fields that are not features (ids, timestamps).
        model_key_field: field whose value picks the model; None means one model ('default').
    """

    def __init__(self, target: str, exclude: Sequence[str] = (), model_key_field: str | None = None):
        super().__init__()
        self.target, self.exclude, self.model_key_field = target, tuple(exclude), model_key_field

    def expand(self, rows):
        results = rows | "ToExample" >> beam.ParDo(
            _ToExampleDoFn(self.target, self.exclude, self.model_key_field)
        ).with_outputs(DEAD_LETTERS, main="examples")
        return ExampleOutputs(results.examples, results[DEAD_LETTERS])


class _ToExampleDoFn(beam.DoFn):
    def __init__(self, target, exclude, model_key_field):
        self.target, self.model_key_field = target, model_key_field
        self.drop = {target, *exclude} | ({model_key_field} if model_key_field else set())

    def process(self, row):
        y = row.fields.get(self.target)
        if y is None or (isinstance(y, float) and math.isnan(y)):
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter(
                stage="RowsToExamples", reason=f"missing target {self.target!r}",
                payload=json.dumps(row.fields, default=str).encode(), event_time=row.event_time))
            return
        x = {k: v for k, v in row.fields.items() if k not in self.drop}
        key = "default" if self.model_key_field is None else str(row.fields.get(self.model_key_field))
        yield Example(row.event_id, row.event_time, x, y, key)
