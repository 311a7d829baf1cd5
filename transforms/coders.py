"""Beam coders for the project's records: field tuples through FastPrimitivesCoder, no pickle.

Registered on import of `transforms.records` users; keeps state and shuffles compact and
free of arbitrary unpickling.
"""
from __future__ import annotations

import dataclasses

from apache_beam import coders

from transforms.records import DeadLetter, Example, Prediction, Row, WindowedMetric


class _DataclassCoder(coders.Coder):
    """Encodes a frozen dataclass as the tuple of its fields."""

    record_type: type = None

    def __init__(self):
        self._fields = [f.name for f in dataclasses.fields(self.record_type)]
        self._tuple = coders.FastPrimitivesCoder()

    def encode(self, value):
        return self._tuple.encode(tuple(getattr(value, f) for f in self._fields))

    def decode(self, encoded):
        return self.record_type(*self._tuple.decode(encoded))

    def is_deterministic(self):
        return False  # dicts inside

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


class ExampleCoder(_DataclassCoder):
    record_type = Example


class RowCoder(_DataclassCoder):
    record_type = Row


class PredictionCoder(_DataclassCoder):
    record_type = Prediction


class WindowedMetricCoder(_DataclassCoder):
    record_type = WindowedMetric


class DeadLetterCoder(_DataclassCoder):
    record_type = DeadLetter


for _coder in (RowCoder, ExampleCoder, PredictionCoder, WindowedMetricCoder, DeadLetterCoder):
    coders.registry.register_coder(_coder.record_type, _coder)
