"""Commit a consumer group's Kafka offsets once the results of the records before them are out.

Every record read from Kafka ends as exactly one delivered result in each *lane* (one lane per
model: its prediction, or a dead letter, or the unpaired record), or is folded into one (an
outcome into its impression's label). A record refused before it fans out to the models (an
undecodable value, an invalid interaction) ends as one dead letter in lane `*`, which stands
for every lane. Each result carries the source spans it stems from (`core.records.Row.origin`);
`WriteToKafka` returns the spans of the results it delivered, by lane. `CommitOffsets`
collects them per partition and commits offset `n` only when, in every lane, every offset
below `n` (since the last commit) is covered: a restarted job resumes at the first record one
of whose results may not have been written, so nothing is lost, and what it redoes was written
at most once before (at-least-once, with results that repeat identically).

>>> advance(10, [(14, 15), (10, 12), (13, 13), (20, 21)])
(16, [(20, 21)])
>>> advance(10, [(4, 9), (11, 12)])
(10, [(11, 12)])
>>> advance_lanes({"a": 10, "b": 10}, {}, {"a": [(10, 14)], "b": [(10, 11)], "*": [(12, 12), (16, 16)]})
(13, {'a': 15, 'b': 13}, {'a': [(16, 16)], 'b': [(16, 16)]})
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms import userstate
from confluent_kafka import TopicPartition

from core.kafka import committed_offsets, consumer, retrying
from core.records import ALL_KEYS

EVERY_LANE = ALL_KEYS  # a result that stands for every lane (refused before the fan-out)


def advance(committed: int, spans) -> tuple[int, list]:
    """The next offset to commit after `committed`, given delivered (first, last) spans, and
    the spans still waiting for a gap below them to close."""
    waiting = []
    for first, last in sorted(spans):
        if first <= committed:
            committed = max(committed, last + 1)
        else:
            waiting.append((first, last))
    # A span may start inside an earlier waiting one only if it was delivered twice: keep order.
    return committed, [(f, l) for f, l in waiting if l >= committed]


def advance_lanes(nexts: dict, waiting: dict, delivered: dict) -> tuple[int, dict, dict]:
    """`advance` in each lane of `nexts` (lane -> next offset) with its waiting and newly
    `delivered` spans (lane -> spans; `EVERY_LANE`'s join every lane): (the offset every lane
    has reached, the new nexts, the new waiting spans)."""
    everywhere = delivered.get(EVERY_LANE, [])
    new_nexts, new_waiting = {}, {}
    for lane, committed in nexts.items():
        new_nexts[lane], left = advance(committed, waiting.get(lane, []) + delivered.get(lane, []) + everywhere)
        if left:
            new_waiting[lane] = left
    return min(new_nexts.values()), new_nexts, new_waiting


class CommitOffsets(beam.PTransform):
    """Commits `group_id`'s offsets for the spans delivered by the job's sinks.

    Input: `((topic, partition), {lane: [(first, last), ...]})` from every `WriteToKafka` whose
    records carry an origin (flatten them first). Outputs `(topic, partition, committed
    offset)` per commit, for logs and tests.

    Args:
        lanes: the results each record ends as, one per lane (e.g. the model keys); an offset
            commits when all of them are delivered.
    """

    def __init__(self, bootstrap: str, group_id: str, lanes=(EVERY_LANE,)):
        super().__init__()
        if not lanes:
            raise ValueError("name at least one lane")
        self.bootstrap, self.group_id, self.lanes = bootstrap, group_id, tuple(sorted(lanes))

    def expand(self, delivered):
        return (delivered
                | "InGlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
                | "Commit" >> beam.ParDo(_CommitDoFn(self.bootstrap, self.group_id, self.lanes)).with_input_types(
                    beam.typehints.KV[beam.typehints.Tuple[str, int], beam.typehints.Any]))


class _CommitDoFn(beam.DoFn):
    NEXT = userstate.ReadModifyWriteStateSpec("next", coders.FastPrimitivesCoder())  # lane -> next offset
    WAITING = userstate.ReadModifyWriteStateSpec("waiting", coders.FastPrimitivesCoder())  # lane -> spans

    def __init__(self, bootstrap, group_id, lanes):
        self.bootstrap, self.group_id, self.lanes = bootstrap, group_id, lanes

    def setup(self):
        self._consumer = consumer(self.bootstrap, self.group_id)

    def teardown(self):
        self._consumer.close()

    def process(self, element, next_state=beam.DoFn.StateParam(NEXT),
                waiting_state=beam.DoFn.StateParam(WAITING)):
        (topic, partition), delivered = element
        nexts = next_state.read()
        if nexts is None:
            start = self._start(topic, partition)
            nexts = {lane: start for lane in self.lanes}
        committed = min(nexts.values())
        new, nexts, waiting = advance_lanes(nexts, waiting_state.read() or {}, delivered)
        if new > committed:
            self._commit(topic, partition, new)
            yield topic, partition, new
        next_state.write(nexts)
        waiting_state.write(waiting)

    def _start(self, topic, partition) -> int:
        """Where the job's readers started: the group's committed offset, else the earliest."""
        tp = committed_offsets(self._consumer, [TopicPartition(topic, partition)])[0]
        if tp.offset >= 0:
            return tp.offset
        return retrying(lambda: self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[0],
                        f"earliest offset of {topic}/{partition}")

    def _commit(self, topic, partition, offset):
        retrying(lambda: self._consumer.commit(offsets=[TopicPartition(topic, partition, offset)],
                                               asynchronous=False), f"commit {topic}/{partition}@{offset}")
