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
from transforms.runners import is_streaming

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

    On a stream each impression id keeps its records in state until an event-time timer closes
    its window; in batch (without a store) its records are grouped and joined in one pass, with
    the same logic (`_Attribution`) and the same results.
    """

    def __init__(self, window_s: float, model_key: str = "default", store: str | None = None,
                 progress: str | None = None):
        super().__init__()
        if window_s <= 0:
            raise ValueError("the attribution window must be positive")
        self.window_ms, self.model_key, self.store = int(window_s * 1000), model_key, store
        self.progress = progress  # a progress counter (transforms.progress) ticked per row joined

    def expand(self, rows):
        keyed = rows | "KeyByImpression" >> beam.Map(lambda r: (
            r.fields["event_id"] if r.fields["event_type"] == "impression"
            else r.fields["impression_id"], r)).with_output_types(beam.typehints.KV[str, Row])
        if is_streaming(rows) or self.store:
            join = beam.ParDo(_JoinDoFn(self.window_ms, self.model_key, self.store, self.progress))
        else:  # all of an impression's records at once: one grouping, no state or timers
            keyed = (keyed | "Stamped" >> beam.ParDo(_WithTimestamp())
                     | "GroupByImpression" >> beam.GroupByKey())
            join = beam.ParDo(_JoinGroupDoFn(self.window_ms, self.model_key, self.progress))
        results = keyed | "Join" >> join.with_outputs(DEAD_LETTERS, JOINED, main="examples")
        return LabelOutputs(results.examples, results[JOINED], results[DEAD_LETTERS])


class _Attribution:
    """One impression's attribution: the impression once shown, whether it was clicked, outcomes
    that came before it (`early`) and the (id, origin) of the outcomes joined to it. Records
    arrive one by one (`arrive`); when the window closes, `close` gives the label and the
    early outcomes that never met their impression."""

    def __init__(self, window_ms: int, model_key: str, state=None):
        self.window_ms, self.model_key = window_ms, model_key
        self.shown, self.clicked, self.early, self.joined = _unpack(state)
        self.closes_at = None  # where the window's timer goes, once a record has set it

    def arrive(self, row: Row):
        """Yields what `row` decides now: a joined outcome's id, or a dead letter."""
        if row.fields["event_type"] == "impression":
            if self.shown is not None:
                yield _dead("LabelImpressions", "duplicate impression", row)
                return
            self.shown, self.closes_at = row, row.event_time + self.window_ms
            for outcome in sorted(self.early, key=lambda r: (r.event_time, r.event_id)):
                yield from self._outcome(outcome)
            self.early = []
        elif self.shown is None:  # the outcome came first: wait for its impression until the window ends
            self.early.append(row)
            self.closes_at = row.event_time + self.window_ms
        else:
            yield from self._outcome(row)

    def _outcome(self, outcome: Row):
        if not self.shown.event_time <= outcome.event_time < self.shown.event_time + self.window_ms:
            yield _dead("LabelImpressions", NO_IMPRESSION, outcome)
            return
        yield beam.pvalue.TaggedOutput(JOINED, outcome.event_id)
        self.joined.append((outcome.event_id, tuple(outcome.origin)))
        self.clicked = self.clicked or outcome.fields["event_type"] in POSITIVE

    def close(self, closed_at_ms: int) -> tuple[Example | None, list]:
        """(the label, or None without an impression; dead letters of the early outcomes)."""
        label = None
        if self.shown is not None:
            label = Example(event_id=self.shown.event_id, event_time=closed_at_ms,
                            x=impression_features(self.shown.fields), y=self.clicked, model_key=self.model_key,
                            origin=tuple(self.shown.origin) + tuple(s for _, spans in self.joined for s in spans),
                            mode=LEARN)
        return label, [_dead("LabelImpressions", NO_IMPRESSION, orphan) for orphan in self.early]

    def state(self) -> tuple:
        return _pack(self.shown, self.clicked, self.early, self.joined)


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
        join = _Attribution(self.window_ms, self.model_key, state)
        yield from join.arrive(row)
        if join.closes_at is not None:
            close.set(Timestamp(micros=join.closes_at * 1000))
        attribution.write(join.state())

    @userstate.on_timer(CLOSE)
    def close_window(self, fired_at=beam.DoFn.TimestampParam,
                     attribution=beam.DoFn.StateParam(ATTRIBUTION)):
        join = _Attribution(self.window_ms, self.model_key, attribution.read())
        label, orphans = join.close(fired_at.micros // 1000)
        if label is not None:
            if self._store is not None:  # durable first: what leaves here is in the store
                stored = json.dumps({"label": _label_json(label), "joined": [i for i, _ in join.joined]})
                self._store.save(LABELS, b"", (label.event_time, label.event_id),
                                 [(label.event_id, label.event_time, stored.encode())],
                                 keep_after_ms=label.event_time - LABEL_HORIZON_MS)
            yield label
        yield from orphans
        attribution.clear()


class _WithTimestamp(beam.DoFn):
    """`(key, value)` -> `(key, (timestamp, value))`: a grouping keeps no element's time."""

    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        key, value = element
        yield key, (timestamp, value)


class _JoinGroupDoFn(beam.DoFn):
    """The batch form of `_JoinDoFn`: an impression id's records, all at once, arrive in (event
    time, event id) order, and their outputs carry the times the streaming form gives them (a
    record's own, and the window's close for what the close emits)."""

    def __init__(self, window_ms: int, model_key: str, progress: str | None = None):
        self.window_ms, self.model_key, self.progress = window_ms, model_key, progress

    def process(self, element):
        _, stamped = element
        stamped = sorted(stamped, key=lambda tv: (tv[1].event_time, tv[1].event_id))
        if self.progress:
            add_progress(self.progress, len(stamped))
        join = _Attribution(self.window_ms, self.model_key)
        for timestamp, row in stamped:
            for out in join.arrive(row):
                yield _at(out, timestamp)
        if join.closes_at is not None:
            closed_at = Timestamp(micros=join.closes_at * 1000)
            label, orphans = join.close(join.closes_at)
            for out in ([label] if label is not None else []) + orphans:
                yield _at(out, closed_at)


def _at(output, timestamp):
    """`output` (tagged or not) at `timestamp`."""
    if isinstance(output, beam.pvalue.TaggedOutput):
        return beam.pvalue.TaggedOutput(output.tag, beam.window.TimestampedValue(output.value, timestamp))
    return beam.window.TimestampedValue(output, timestamp)


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
