"""One impression's attribution: its outcomes joined within the window, as both forms of
`transforms.recsys.labels` apply it (the stateful one per record as it arrives, the grouped
one over an impression id's records in order), and the outputs they share.
"""
from __future__ import annotations

import apache_beam as beam

from core.interactions import POSITIVE, dead_letter, impression_features
from core.records import LEARN, Example, Row

DEAD_LETTERS = "dead_letters"
JOINED = "joined_outcomes"
# One reason whether the impression is missing, earlier than the window or later than the
# outcome: in streaming which of these a late outcome meets depends on arrival order.
NO_IMPRESSION = "no impression of this id within the attribution window before the outcome"
LABELS = "labels"  # the store key of the labels
LABEL_HORIZON_MS = 24 * 3600 * 1000  # how long labels stay stored for replays



class Attribution:
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
                yield dead("LabelImpressions", "duplicate impression", row)
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
            yield dead("LabelImpressions", NO_IMPRESSION, outcome)
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
                            mode=LEARN, served_by=self.shown.fields.get("model_key"))
        return label, [dead("LabelImpressions", NO_IMPRESSION, orphan) for orphan in self.early]

    def state(self) -> tuple:
        return _pack(self.shown, self.clicked, self.early, self.joined)


def at(output, timestamp):
    """`output` (tagged or not) at `timestamp`."""
    if isinstance(output, beam.pvalue.TaggedOutput):
        return beam.pvalue.TaggedOutput(output.tag, beam.window.TimestampedValue(output.value, timestamp))
    return beam.window.TimestampedValue(output, timestamp)


def impression_of(row: Row) -> str:
    """The impression id a record is joined under: its own for an impression, else the one it answers."""
    return row.fields["event_id"] if row.fields["event_type"] == "impression" else row.fields["impression_id"]


def replay(row: Row, stored: dict):
    """A record whose impression an earlier run labelled: an impression gets its label again,
    an outcome the fate it had then (joined to that label, or a dead letter)."""
    if row.fields["event_type"] == "impression":
        yield label_from_json(stored["label"])
    elif row.event_id in stored["joined"]:
        yield beam.pvalue.TaggedOutput(JOINED, row.event_id)
    else:
        yield dead("LabelImpressions", NO_IMPRESSION, row)


def label_json(label: Example) -> dict:
    return {"event_id": label.event_id, "event_time": label.event_time, "x": label.x, "y": label.y,
            "model_key": label.model_key, "origin": [list(o) for o in label.origin], "served_by": label.served_by}


def label_from_json(d: dict) -> Example:
    return Example(event_id=d["event_id"], event_time=d["event_time"], x=d["x"], y=d["y"],
                   model_key=d["model_key"], origin=tuple(tuple(o) for o in d["origin"]), mode=LEARN,
                   served_by=d.get("served_by"))


def _pack(shown, clicked, early, joined) -> tuple:
    as_tuple = lambda r: (r.event_id, r.event_time, r.fields, tuple(r.origin))  # noqa: E731
    return (shown and as_tuple(shown), clicked, [as_tuple(r) for r in early], tuple(joined))


def _unpack(state) -> tuple:
    if state is None:
        return None, False, [], []
    shown, clicked, early, joined = state
    return (shown and Row(*shown)), clicked, [Row(*r) for r in early], list(joined)


def dead(stage: str, reason: str, row: Row) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(stage, reason, row))
