"""Impressions labelled by their outcomes, within an attribution window of event time.

An impression is served a prediction when it arrives (`core.interactions.served_example`) and
labelled when its attribution window closes (an event-time timer): positive if a click or
watch for it arrived within the window, negative otherwise (a skip, or nothing). Every label thus comes
the same delay after its impression, so a window of labels is a fair sample of the
impressions shown one attribution window earlier. The label (`learn` mode) carries the
features the impression was served with and, as its event time, the moment the window closed.

With a store (`models.snapshots`), each label is saved, with the ids of the outcomes it
joined, before it leaves. A restarted job whose source replays records (their offsets were not
committed yet) then gives a replayed impression its stored label again, and a replayed outcome
whose impression was labelled by the earlier run the fate it had there, instead of calling it
an orphan because the join state died with the job.
"""
from __future__ import annotations

import json
from typing import NamedTuple

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import Timestamp

from core.interactions import POSITIVE, dead_letter, impression_features
from core.records import LEARN, Example, Row
from stores import snapshots
from transforms import coders as record_coders  # noqa: F401  (registers the record coders)
from transforms.progress import add_progress

DEAD_LETTERS = "dead_letters"
JOINED = "joined_outcomes"
# One reason whether the impression is missing, earlier than the window or later than the
# outcome: in streaming which of these a late outcome meets depends on arrival order.
NO_IMPRESSION = "no impression of this id within the attribution window before the outcome"
LABELS = "labels"  # the store key of the labels
LABEL_HORIZON_MS = 24 * 3600 * 1000  # how long labels stay stored for replays


class LabelOutputs(NamedTuple):
    examples: beam.PCollection
    joined_outcomes: beam.PCollection
    dead_letters: beam.PCollection


class LabelImpressions(beam.PTransform):
    """Joins outcomes to their impression within `window_s` seconds of event time.

    Outputs labels, `learn`-mode `Example`s, when the window closes (y True for a click or
    watch within it, else False), the ids of outcomes folded into a label (`joined_outcomes`, for
    accounting), and dead letters: duplicate impressions, and outcomes with no impression in
    the window before them.
    """

    def __init__(self, window_s: float, model_key: str = "default", store: str | None = None,
                 progress: str | None = None):
        super().__init__()
        if window_s <= 0:
            raise ValueError("the attribution window must be positive")
        self.window_ms, self.model_key, self.store = int(window_s * 1000), model_key, store
        self.progress = progress  # a progress counter (transforms.progress) ticked per row joined

    def expand(self, rows):
        results = (
            rows
            | "KeyByImpression" >> beam.Map(lambda r: (
                r.fields["event_id"] if r.fields["event_type"] == "impression"
                else r.fields["impression_id"], r)).with_output_types(beam.typehints.KV[str, Row])
            | "Join" >> beam.ParDo(_JoinDoFn(self.window_ms, self.model_key, self.store, self.progress)).with_outputs(
                DEAD_LETTERS, JOINED, main="examples")
        )
        return LabelOutputs(results.examples, results[JOINED], results[DEAD_LETTERS])


class _JoinDoFn(beam.DoFn):
    # One state cell per impression id, (impression, clicked, early outcomes) as plain
    # tuples: each state access costs far more than the join's logic, so keep them few.
    ATTRIBUTION = userstate.ReadModifyWriteStateSpec("attribution", coders.FastPrimitivesCoder())
    CLOSE = userstate.TimerSpec("close", TimeDomain.WATERMARK)

    def __init__(self, window_ms: int, model_key: str, store: str | None = None, progress: str | None = None):
        self.window_ms, self.model_key, self.store, self.progress = window_ms, model_key, store, progress

    def setup(self):
        self._store = snapshots.open_store(self.store) if self.store else None

    def teardown(self):
        if self._store is not None:
            self._store.close()

    def process(self, element, attribution=beam.DoFn.StateParam(ATTRIBUTION),
                close=beam.DoFn.TimerParam(CLOSE)):
        impression_id, row = element
        if self.progress:
            add_progress(self.progress, 1)
        state = attribution.read()
        if state is None and self._store is not None:
            stored = self._store.predictions(LABELS, [impression_id]).get(impression_id)
            if stored is not None:  # labelled before (by an earlier run): the same fate again
                yield from _replay(row, json.loads(stored))
                return
        shown, clicked, early, joined = _unpack(state)
        if row.fields["event_type"] == "impression":
            if shown is not None:
                yield _dead("LabelImpressions", "duplicate impression", row)
                return
            shown = row
            close.set(Timestamp(micros=(row.event_time + self.window_ms) * 1000))
            for outcome in sorted(early, key=lambda r: (r.event_time, r.event_id)):
                clicked = yield from self._outcome(shown, outcome, clicked, joined)
            early = []
        elif shown is None:  # the outcome came first: wait for its impression until the window ends
            early.append(row)
            close.set(Timestamp(micros=(row.event_time + self.window_ms) * 1000))
        else:
            clicked = yield from self._outcome(shown, row, clicked, joined)
        attribution.write(_pack(shown, clicked, early, joined))

    def _outcome(self, shown: Row, outcome: Row, clicked: bool, joined: list):
        """Yields the outcome's fate; returns whether the impression is now clicked. A joined
        outcome's id and origin go with the label (into `joined`)."""
        if not shown.event_time <= outcome.event_time < shown.event_time + self.window_ms:
            yield _dead("LabelImpressions", NO_IMPRESSION, outcome)
            return clicked
        yield beam.pvalue.TaggedOutput(JOINED, outcome.event_id)
        joined.append((outcome.event_id, tuple(outcome.origin)))
        return clicked or outcome.fields["event_type"] in POSITIVE

    @userstate.on_timer(CLOSE)
    def close_window(self, fired_at=beam.DoFn.TimestampParam,
                     attribution=beam.DoFn.StateParam(ATTRIBUTION)):
        shown, clicked, early, joined = _unpack(attribution.read())
        if shown is not None:
            label = Example(event_id=shown.event_id, event_time=fired_at.micros // 1000,
                            x=impression_features(shown.fields), y=clicked, model_key=self.model_key,
                            origin=tuple(shown.origin) + tuple(s for _, spans in joined for s in spans),
                            mode=LEARN)
            if self._store is not None:  # durable first: what leaves here is in the store
                stored = json.dumps({"label": _label_json(label), "joined": [i for i, _ in joined]})
                self._store.save(LABELS, b"", (label.event_time, label.event_id),
                                 [(label.event_id, label.event_time, stored.encode())],
                                 keep_after_ms=label.event_time - LABEL_HORIZON_MS)
            yield label
        for orphan in early:
            yield _dead("LabelImpressions", NO_IMPRESSION, orphan)
        attribution.clear()


def _replay(row: Row, stored: dict):
    """A record whose impression an earlier run labelled: an impression gets its label again,
    an outcome the fate it had then (joined to that label, or a dead letter)."""
    if row.fields["event_type"] == "impression":
        yield _label_from_json(stored["label"])
    elif row.event_id in stored["joined"]:
        yield beam.pvalue.TaggedOutput(JOINED, row.event_id)
    else:
        yield _dead("LabelImpressions", NO_IMPRESSION, row)


def _label_json(label: Example) -> dict:
    return {"event_id": label.event_id, "event_time": label.event_time, "x": label.x, "y": label.y,
            "model_key": label.model_key, "origin": [list(o) for o in label.origin]}


def _label_from_json(d: dict) -> Example:
    return Example(event_id=d["event_id"], event_time=d["event_time"], x=d["x"], y=d["y"],
                   model_key=d["model_key"], origin=tuple(tuple(o) for o in d["origin"]), mode=LEARN)


def _pack(shown, clicked, early, joined) -> tuple:
    as_tuple = lambda r: (r.event_id, r.event_time, r.fields, tuple(r.origin))  # noqa: E731
    return (shown and as_tuple(shown), clicked, [as_tuple(r) for r in early], tuple(joined))


def _unpack(state) -> tuple:
    if state is None:
        return None, False, [], []
    shown, clicked, early, joined = state
    return (shown and Row(*shown)), clicked, [Row(*r) for r in early], list(joined)


def _dead(stage: str, reason: str, row: Row) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(stage, reason, row))
