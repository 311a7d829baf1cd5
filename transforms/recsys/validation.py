"""Interaction records validated: the usable ones pass, the others leave as dead letters with
the reason (`core.interactions.invalid_reason`)."""
from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam

from core.interactions import dead_letter, invalid_reason
from core.records import Row
from transforms import coders  # noqa: F401  (registers the record coders)

DEAD_LETTERS = "dead_letters"


class ValidationOutputs(NamedTuple):
    valid: beam.PCollection
    dead_letters: beam.PCollection


class ValidateInteractions(beam.PTransform):
    """Rows -> valid interaction Rows; the others leave as dead letters with the reason."""

    def expand(self, rows):
        results = rows | "Validate" >> beam.ParDo(_ValidateDoFn()).with_outputs(
            DEAD_LETTERS, main="valid")
        return ValidationOutputs(results.valid, results[DEAD_LETTERS])


class _ValidateDoFn(beam.DoFn):
    def process(self, row: Row):
        reason = invalid_reason(row.fields)
        if reason is None:
            yield row
        else:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter("ValidateInteractions", reason, row))
