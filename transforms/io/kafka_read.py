"""Reading Kafka topics in Python: a splittable DoFn per topic over all its partitions.

One reader per topic holds every partition, so it alone decides the topic's watermark: the
oldest "latest event time read" over the partitions (see `_advance`). With one reader per
partition, Prism 2.77 let the stage watermark run ahead of lagging partitions, and their
records were dropped as late downstream (measured: 60 s windows that should hold 120 records
held about 26); tests/test_kafka.py checks that every window fires whole.

The restriction is a tuple of (partition, next offset, stop offset, latest event time ms) per
partition: plain values, so Beam encodes it without pickling. The runner may checkpoint a
reader between records, but never split one partition's offsets between readers.
"""
from __future__ import annotations

import logging
import sys

import apache_beam as beam
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp
from confluent_kafka import KafkaException, TopicPartition

from core.kafka import KafkaRecord, committed_offsets, consumer, is_transient, retrying
from transforms.io.kafkaio import ReadWithKafkaIO
from transforms.runners import is_flink

UNBOUNDED = sys.maxsize
NO_TIME = -(2 ** 62)


class ReadFromKafka(beam.PTransform):
    """Reads every partition of `topics` as `KafkaRecord`s timestamped by the Kafka timestamp.

    An endless read on Flink goes through Beam's Java KafkaIO instead (`transforms.io.kafkaio`:
    on Beam 2.62's Flink runner this reader's watermark does not advance).

    Args:
        bootstrap: Kafka bootstrap servers.
        topics: topic names.
        group_id: consumer group whose committed offsets are the starting points (else the
            earliest offsets, or those of `start_time_ms`).
        stop_at_end: stop at the end offsets found at start-up (a bounded replay).
        poll_records: most records read per poll before the reader checkpoints itself.
        start_time_ms: where a partition without a committed offset starts: its first record
            with a Kafka timestamp at or after this (e.g. a feature backfill's cut-off).
    """

    def __init__(self, bootstrap: str, topics, group_id: str, stop_at_end: bool = False,
                 poll_records: int = 500, start_time_ms: int | None = None):
        super().__init__()
        if not topics:
            raise ValueError("name at least one topic")
        self.bootstrap, self.topics, self.group_id = bootstrap, list(topics), group_id
        self.stop_at_end, self.poll_records, self.start_time_ms = stop_at_end, poll_records, start_time_ms

    def expand(self, pbegin):
        if not self.stop_at_end and is_flink(pbegin.pipeline.options):
            # This reader's watermark does not advance on Beam 2.62's Flink runner: see kafkaio.
            return pbegin | "KafkaIO" >> ReadWithKafkaIO(self.bootstrap, self.topics, self.group_id,
                                                        self.start_time_ms)
        reader = _ReadTopicDoFn if self.stop_at_end else _ReadTopicForeverDoFn
        return (pbegin
                | "Topics" >> beam.Create(self.topics)
                | "Read" >> beam.ParDo(reader(self.bootstrap, self.group_id, self.stop_at_end,
                                              self.poll_records, self.start_time_ms)))


CHECKPOINT = ("checkpoint",)  # a claim that allows the next checkpoint (see try_split)


class _PartitionsTracker(RestrictionTracker):
    """Claims (partition, offset, timestamp) positions. It splits only when the reader asks
    to checkpoint (claiming `CHECKPOINT`, then deferring): runner-initiated splits of a
    running read made Prism 2.77 deliver some records twice downstream."""

    def __init__(self, restriction):
        self._positions = {p: [nxt, stop, latest] for p, nxt, stop, latest in restriction}
        self._checkpointed = False
        self._may_checkpoint = False

    def current_restriction(self):
        return tuple((p, nxt, stop, latest) for p, (nxt, stop, latest) in sorted(self._positions.items()))

    def try_claim(self, position):
        if position == CHECKPOINT:
            self._may_checkpoint = True
            return False
        partition, offset, timestamp_ms = position
        entry = self._positions[partition]
        if self._checkpointed or offset < entry[0] or offset >= entry[1]:
            return False
        entry[0], entry[2] = offset + 1, max(entry[2], timestamp_ms)
        return True

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder != 0 or self._checkpointed or not self._may_checkpoint:
            return None
        self._checkpointed = True
        done = tuple((p, nxt, nxt, latest) for p, nxt, _, latest in self.current_restriction())
        return done, self.current_restriction()

    def check_done(self):
        left = {p: e for p, e in self._positions.items() if e[0] < e[1]}
        if left and not self._checkpointed:
            raise ValueError(f"partitions {sorted(left)} still have offsets to read")

    def current_progress(self):
        # A fraction, not work counts: the SDK turns counts into NaN progress for this reader
        # (seen with Prism 2.77) and then fails the runner's split request.
        left = [e for e in self._positions.values() if e[0] < e[1]]
        if not left:
            return RestrictionProgress(fraction=1.0)
        if self.is_bounded():
            done = sum(e[0] for e in self._positions.values())
            return RestrictionProgress(fraction=done / (done + sum(e[1] - e[0] for e in left)))
        return RestrictionProgress(fraction=0.0)

    def is_bounded(self):
        return all(e[1] != UNBOUNDED for e in self._positions.values())


class _ReadTopicDoFn(beam.DoFn, RestrictionProvider):
    """Reads one topic, all partitions; it is its own restriction provider."""

    def __init__(self, bootstrap, group_id, stop_at_end, poll_records, start_time_ms=None):
        self.bootstrap, self.group_id = bootstrap, group_id
        self.stop_at_end, self.poll_records, self.start_time_ms = stop_at_end, poll_records, start_time_ms

    def initial_restriction(self, topic):
        return retrying(lambda: self._start_positions(topic), f"start positions of {topic!r}")

    def _start_positions(self, topic):
        c = consumer(self.bootstrap, self.group_id)
        try:
            found = c.list_topics(topic, timeout=10).topics.get(topic)
            if found is not None and found.error is not None and is_transient(found.error):
                raise KafkaException(found.error)  # a broker still starting up: retried
            if found is None or found.error is not None or not found.partitions:
                raise ValueError(f"Kafka topic {topic!r} not found at {self.bootstrap}: "
                                 f"{found and found.error}")
            partitions = sorted(found.partitions)
            committed = committed_offsets(c, [TopicPartition(topic, p) for p in partitions])
            by_time = self._offsets_at_start_time(c, topic, partitions)
            restriction = []
            for tp in committed:
                low, high = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
                at_time = by_time.get(tp.partition, low)
                start = tp.offset if tp.offset >= 0 else (high if at_time < 0 else max(at_time, low))
                restriction.append((tp.partition, start, max(start, high) if self.stop_at_end else UNBOUNDED,
                                    NO_TIME))
        finally:
            c.close()
        return tuple(restriction)

    def _offsets_at_start_time(self, c, topic, partitions) -> dict:
        """Partition -> its first offset stamped at or after start_time_ms (-1: none yet)."""
        if self.start_time_ms is None:
            return {}
        found = c.offsets_for_times([TopicPartition(topic, p, self.start_time_ms) for p in partitions],
                                    timeout=10)
        return {tp.partition: tp.offset for tp in found}

    def create_tracker(self, restriction):
        return _PartitionsTracker(restriction)

    def restriction_size(self, topic, restriction):
        return sum(min(stop - nxt, 1_000_000) for _, nxt, stop, _ in restriction)

    def truncate(self, topic, restriction):
        return None if any(stop == UNBOUNDED for _, _, stop, _ in restriction) else restriction

    def setup(self):
        self._consumers = {}

    def teardown(self):
        for c in self._consumers.values():
            c.close()

    def process(self, topic, tracker=beam.DoFn.RestrictionParam(),
                watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())):
        restriction = tracker.current_restriction()
        open_partitions = [(p, nxt) for p, nxt, stop, _ in restriction if nxt < stop]
        if not open_partitions:
            return
        c = self._consumers.get(topic)
        if c is None:
            c = self._consumers[topic] = consumer(self.bootstrap, self.group_id)
        c.assign([TopicPartition(topic, p, nxt) for p, nxt in open_partitions])
        messages = c.consume(self.poll_records, timeout=0.5)
        positions = dict(open_partitions)
        read = 0
        for m in messages:
            if m.error() is not None:
                if is_transient(m.error()):
                    logging.warning("Kafka %s: %s; retrying", topic, m.error())
                    continue
                raise KafkaException(m.error())
            timestamp_ms = m.timestamp()[1]
            if not tracker.try_claim((m.partition(), m.offset(), timestamp_ms)):
                continue  # past this partition's stop offset (a bounded replay)
            read += 1
            first, positions[m.partition()] = positions[m.partition()], m.offset() + 1
            if first != m.offset():  # transaction markers and compaction leave gaps; else a clue
                logging.warning("Kafka %s/%d: offsets %d..%d skipped", topic, m.partition(), first, m.offset() - 1)
            yield beam.window.TimestampedValue(
                KafkaRecord(topic, m.partition(), m.offset(), m.key(), m.value(), timestamp_ms, first),
                Timestamp(micros=timestamp_ms * 1000))
        try:
            self._advance(c, topic, tracker.current_restriction(), watermark)
        except KafkaException as e:
            if not is_transient(e.args[0]):
                raise
            logging.warning("Kafka %s: watermark not advanced: %s", topic, e)
        tracker.try_claim(CHECKPOINT)
        tracker.defer_remainder(Duration(seconds=0 if read else 0.2))

    @staticmethod
    def _advance(c, topic, restriction, watermark):
        """Watermark: the oldest latest-read event time over the partitions.

        Records within a partition arrive in timestamp order (the producers' event times), so
        no partition will deliver anything older. A partition caught up with its end holds
        the watermark at its latest record until more arrives (an idle partition stalls time
        rather than let its next records come late); one never read holds it back entirely
        unless it is empty.
        """
        seen = []
        for p, nxt, stop, latest in restriction:
            if latest != NO_TIME:
                seen.append(latest)
            elif nxt < stop and nxt < c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]:
                return  # records still unread in a partition we know nothing of yet
        if not seen:
            return
        candidate = Timestamp(micros=min(seen) * 1000)
        current = watermark.current_watermark()
        if current is None or current == MIN_TIMESTAMP or candidate > current:
            watermark.set_watermark(candidate)


class _ReadTopicForeverDoFn(_ReadTopicDoFn):
    """The same reader with no end offsets: its output is unbounded."""

    @beam.DoFn.unbounded_per_element()
    def process(self, topic, tracker=beam.DoFn.RestrictionParam(),
                watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())):
        yield from super().process(topic, tracker, watermark)
