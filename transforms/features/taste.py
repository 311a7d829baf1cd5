"""Taste alarms over interactions (`monitoring.taste`), the same in batch and in streaming.

Clicks are keyed by user, where each becomes a signal from the user's own click history; the
signals then meet in one stage, in event-time order, where the monitor raises the alarms. In
streaming both are profile stages (`transforms.features.streaming`), the monitor's a single
entity: a few clicks a second, each a handful of floats. `AddEntityFeatures(taste_alarms=)`
applies the alarms to the user profiles.
"""
from __future__ import annotations

import apache_beam as beam

from core.features import order
from core.records import Alert, Row
from monitoring import taste
from transforms.chunks import ChunkPerKey
from transforms.eventtime import stamp
from transforms.features.streaming import STAGES, ProfileShardDoFn
from transforms.runners import is_streaming
from transforms.shards import SHARDS, shard_of

SOURCE = "user_features"  # the `model_key` of a taste alarm's alert


class TasteAlarms(beam.PTransform):
    """Valid interaction `Row`s -> alarm `Row`s (`monitoring.taste.alarm_row`), one per taste
    drift the users' clicks show.

    Args:
        streaming: force the streaming (stateful) or batch (grouped) form; default: from the
            input and the pipeline options.
        shards: in streaming, the keys the per-user stage spreads users over.
    """

    def __init__(self, streaming: bool | None = None, shards: int = SHARDS):
        super().__init__()
        self.streaming, self.shards = streaming, shards

    def expand(self, rows):
        batch = not (is_streaming(rows) if self.streaming is None else self.streaming)
        clicks = rows | "Clicks" >> beam.Filter(lambda r: r.fields["event_type"] == "click"
                                                and bool(r.fields.get("item_genres")))
        if batch:
            signals = (clicks
                       | "ByUser" >> beam.Map(lambda r: (r.fields["user_id"], r)).with_output_types(
                           beam.typehints.KV[str, Row])
                       | "GroupUsers" >> beam.GroupByKey()
                       | "Signals" >> beam.FlatMap(_all_at_once, "taste"))
            alarms = (signals
                      | "AllClicks" >> beam.Map(lambda r: ("click", r)).with_output_types(beam.typehints.KV[str, Row])
                      | "GroupClicks" >> beam.GroupByKey()
                      | "Monitor" >> beam.FlatMap(_all_at_once, "taste_monitor"))
        else:
            signals = (clicks
                       | "ByUserShard" >> beam.Map(lambda r, n=self.shards: (shard_of(r.fields["user_id"], n), r))
                       .with_output_types(beam.typehints.KV[int, Row])
                       | "ChunkUsers" >> ChunkPerKey()
                       | "Signals" >> beam.ParDo(ProfileShardDoFn("taste"))
                       | "WithSignal" >> beam.Filter(lambda r: "taste_signal" in r.fields))
            alarms = (signals
                      | "OneKey" >> beam.Map(lambda r: (0, r)).with_output_types(beam.typehints.KV[int, Row])
                      | "ChunkClicks" >> ChunkPerKey()
                      | "Monitor" >> beam.ParDo(ProfileShardDoFn("taste_monitor"))
                      | "OnlyAlarms" >> beam.Filter(lambda r: r.fields["event_type"] == taste.ALARM))
        return alarms


def _all_at_once(keyed_rows, kind: str):
    """A batch stage: one entity's rows, in order, through a fresh profile of `kind`."""
    stage = STAGES[kind]
    _, rows = keyed_rows
    for row in stage.featurise(stage.profile_type(), sorted(rows, key=order)):
        yield beam.window.TimestampedValue(row, stamp(row.event_time, stage.offset_us))


def to_alert(alarm: Row) -> Alert:
    """The alert record of an alarm (kind `drift`, one per alarm)."""
    return Alert("alert", "drift", SOURCE, alarm.event_time,
                 "taste alarm: users click genres their histories do not explain; "
                 "their genre profiles restart from their last 15 minutes")
