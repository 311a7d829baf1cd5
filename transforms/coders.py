"""Beam coders for the project's records: field tuples through FastPrimitivesCoder, no pickle.

Registered on import of `transforms.records` users; keeps state and shuffles compact and
free of arbitrary unpickling.
"""
from __future__ import annotations

import dataclasses
import operator

from apache_beam import coders
from apache_beam.coders import coder_impl

from core.records import Alert, DeadLetter, Example, Prediction, Row, WindowedMetric


class _DataclassCoderImpl(coder_impl.StreamCoderImpl):
    """Writes the record's field tuple straight to the stream (no intermediate bytes)."""

    def __init__(self, record_type: type):
        self._fields = operator.attrgetter(*[f.name for f in dataclasses.fields(record_type)])
        self._record_type = record_type
        self._tuple = coders.FastPrimitivesCoder().get_impl()

    def encode_to_stream(self, value, stream, nested):
        self._tuple.encode_to_stream(self._fields(value), stream, nested)

    def decode_from_stream(self, stream, nested):
        return self._record_type(*self._tuple.decode_from_stream(stream, nested))


class _DataclassCoder(coders.Coder):
    """Encodes a frozen dataclass as the tuple of its fields."""

    record_type: type = None

    def _create_impl(self):
        return _DataclassCoderImpl(self.record_type)

    def encode(self, value):
        return self.get_impl().encode(value)

    def decode(self, encoded):
        return self.get_impl().decode(encoded)

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


class AlertCoder(_DataclassCoder):
    record_type = Alert


for _coder in (RowCoder, ExampleCoder, PredictionCoder, WindowedMetricCoder, DeadLetterCoder, AlertCoder):
    coders.registry.register_coder(_coder.record_type, _coder)
