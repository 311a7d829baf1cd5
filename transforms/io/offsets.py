"""Commit a consumer group's Kafka offsets once the results of the records before them are out.

Every record read from Kafka ends as exactly one delivered result (a prediction, a dead
letter), or is folded into one (an outcome into its impression's label). Each result carries
the source spans it stems from (`core.records.Row.origin`); `WriteToKafka` returns the spans of the
results it delivered. `CommitOffsets` collects them per partition and commits offset `n` only
when every offset below `n` (since the last commit) is covered: a restarted job resumes at the
first record whose result may not have been written, so nothing is lost, and what it redoes
was written at most once before (at-least-once, with results that repeat identically).

>>> advance(10, [(14, 15), (10, 12), (13, 13), (20, 21)])
(16, [(20, 21)])
>>> advance(10, [(4, 9), (11, 12)])
(10, [(11, 12)])
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms import userstate
from confluent_kafka import TopicPartition

from core.kafka import committed_offsets, consumer, retrying


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


class CommitOffsets(beam.PTransform):
    """Commits `group_id`'s offsets for the spans delivered by the job's sinks.

    Input: `((topic, partition), [(first, last), ...])` from every `WriteToKafka` whose records
    carry an origin (flatten them first). Outputs `(topic, partition, committed offset)` per
    commit, for logs and tests.
    """

    def __init__(self, bootstrap: str, group_id: str):
        super().__init__()
        self.bootstrap, self.group_id = bootstrap, group_id

    def expand(self, delivered):
        return (delivered
                | "InGlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
                | "Commit" >> beam.ParDo(_CommitDoFn(self.bootstrap, self.group_id)).with_input_types(
                    beam.typehints.KV[beam.typehints.Tuple[str, int], beam.typehints.Any]))


class _CommitDoFn(beam.DoFn):
    NEXT = userstate.ReadModifyWriteStateSpec("next", coders.VarIntCoder())
    WAITING = userstate.ReadModifyWriteStateSpec("waiting", coders.FastPrimitivesCoder())

    def __init__(self, bootstrap, group_id):
        self.bootstrap, self.group_id = bootstrap, group_id

    def setup(self):
        self._consumer = consumer(self.bootstrap, self.group_id)

    def teardown(self):
        self._consumer.close()

    def process(self, element, next_state=beam.DoFn.StateParam(NEXT),
                waiting_state=beam.DoFn.StateParam(WAITING)):
        (topic, partition), spans = element
        committed = next_state.read()
        if committed is None:
            committed = self._start(topic, partition)
        new, waiting = advance(committed, list(waiting_state.read() or []) + list(spans))
        if new > committed:
            self._commit(topic, partition, new)
            next_state.write(new)
            yield topic, partition, new
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
