"""Reading Kafka topics in Python: a splittable DoFn per topic over all its partitions.

One reader per topic holds every partition, so it alone decides the topic's watermark: the
oldest "latest event time read" over the partitions (see `_advance`). With one reader per
partition, Prism 2.77 let the stage watermark run ahead of lagging partitions, and their
records were dropped as late downstream (measured: 60 s windows that should hold 120 records
held about 26); tests/test_kafka.py checks that every window fires whole.

With `payloads` the reader decodes each value (`core.payloads`) and the event time is the
payload's own field, whatever the Kafka timestamp says (ordinary producers stamp the time of
sending). Its lateness policy: a partition's records may come out of event-time order by up to
`allowed_lateness_s`; the watermark trails the partitions' latest event times by that much, so
every record within it reaches the ordered stages on time and is processed exactly as in a
batch run. A record further behind the latest event time read before it on its partition is a
`late` dead letter, decided at the source: the decision depends only on the partition's order,
never on timing, and nothing downstream ever sees a late record. One record stamped far in the
future would make every later record of its partition late: with `max_clock_skew_s`, a record
whose event time is further ahead of its own Kafka timestamp (when it was sent or appended) is
a `future` dead letter instead. (A producer that stamps records with their event time gives
this check nothing to hold on to.)

The restriction is a tuple of (partition, next offset, stop offset, latest event time ms) per
partition: plain values, so Beam encodes it without pickling. The runner may checkpoint a
reader between records, but never split one partition's offsets between readers.
"""
from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp
from confluent_kafka import KafkaException, TopicPartition

from core.kafka import KafkaRecord, committed_offsets, consumer, is_transient, retrying
from core.payloads import AvroPayloads
from core.records import DeadLetter
from transforms.io.kafka import DEAD_LETTERS, DecodeAvro, DecodeOutputs
from transforms.io.kafka_positions import CHECKPOINT, NO_TIME, UNBOUNDED, PartitionsTracker
from transforms.io.kafkaio import ReadWithKafkaIO
from transforms.runners import is_flink

POLL_TIMEOUT_S = 0.1  # longest a poll waits for records (each poll is a bundle: a live stream's latency)


class ReadFromKafka(beam.PTransform):
    """Reads every partition of `topics` as `KafkaRecord`s timestamped by the Kafka timestamp,
    or, with `payloads`, as decoded `Row`s and dead letters (`DecodeOutputs`) timestamped by
    their event time, under the lateness policy (see the module's docstring).

    An endless read on Flink goes through Beam's Java KafkaIO instead (`transforms.io.kafkaio`:
    on Beam 2.62's Flink runner this reader's watermark does not advance); its records are
    timestamped by Kafka, so there the policy is KafkaIO's, not this reader's.

    Args:
        bootstrap: Kafka bootstrap servers.
        topics: topic names.
        group_id: consumer group whose committed offsets are the starting points (else the
            earliest offsets, or those of `start_time_ms`).
        stop_at_end: stop at the end offsets found at start-up (a bounded replay).
        poll_records: most records read per poll before the reader checkpoints itself.
        start_time_ms: where a partition without a committed offset starts: its first record
            with a Kafka timestamp at or after this (e.g. a feature backfill's cut-off).
        payloads: how values decode into rows (e.g. `core.payloads.AvroPayloads`); None reads
            raw `KafkaRecord`s.
        allowed_lateness_s: with `payloads`, how far behind its partition's latest event time
            a record may come and still be used.
        max_clock_skew_s: with `payloads`, how far ahead of its Kafka timestamp a record's event
            time may be (the producers' clocks); None: no limit.
    """

    def __init__(self, bootstrap: str, topics, group_id: str, stop_at_end: bool = False,
                 poll_records: int = 500, start_time_ms: int | None = None,
                 payloads: AvroPayloads | None = None, allowed_lateness_s: float = 0.0,
                 max_clock_skew_s: float | None = None):
        super().__init__()
        if not topics:
            raise ValueError("name at least one topic")
        if allowed_lateness_s < 0:
            raise ValueError("the allowed lateness cannot be negative")
        self.bootstrap, self.topics, self.group_id = bootstrap, list(topics), group_id
        self.stop_at_end, self.poll_records, self.start_time_ms = stop_at_end, poll_records, start_time_ms
        self.payloads, self.allowed_lateness_ms = payloads, int(allowed_lateness_s * 1000)
        self.max_skew_ms = None if max_clock_skew_s is None else int(max_clock_skew_s * 1000)

    def expand(self, pbegin):
        if not self.stop_at_end and is_flink(pbegin.pipeline.options):
            # This reader's watermark does not advance on Beam 2.62's Flink runner: see kafkaio.
            records = pbegin | "KafkaIO" >> ReadWithKafkaIO(self.bootstrap, self.topics, self.group_id,
                                                           self.start_time_ms)
            return records if self.payloads is None else records | "Decode" >> DecodeAvro(self.payloads)
        reader = _ReadTopicDoFn if self.stop_at_end else _ReadTopicForeverDoFn
        read = (pbegin
                | "Topics" >> beam.Create(self.topics)
                | "Read" >> beam.ParDo(reader(self.bootstrap, self.group_id, self.stop_at_end, self.poll_records,
                                              self.start_time_ms, self.payloads, self.allowed_lateness_ms,
                                              self.max_skew_ms)))
        if self.payloads is None:
            return read
        split = read | "Split" >> beam.ParDo(_SplitDeadLetters()).with_outputs(DEAD_LETTERS, main="rows")
        return DecodeOutputs(split.rows, split[DEAD_LETTERS])


class _SplitDeadLetters(beam.DoFn):
    def process(self, element):
        yield beam.pvalue.TaggedOutput(DEAD_LETTERS, element) if isinstance(element, DeadLetter) else element


class _ReadTopicDoFn(beam.DoFn, RestrictionProvider):
    """Reads one topic, all partitions; it is its own restriction provider."""

    def __init__(self, bootstrap, group_id, stop_at_end, poll_records, start_time_ms=None, payloads=None,
                 allowed_lateness_ms=0, max_skew_ms=None):
        self.bootstrap, self.group_id = bootstrap, group_id
        self.stop_at_end, self.poll_records, self.start_time_ms = stop_at_end, poll_records, start_time_ms
        self.payloads, self.allowed_lateness_ms, self.max_skew_ms = payloads, allowed_lateness_ms, max_skew_ms

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
        return PartitionsTracker(restriction)

    def restriction_size(self, topic, restriction):
        return sum(min(stop - nxt, 1_000_000) for _, nxt, stop, _ in restriction)

    def truncate(self, topic, restriction):
        return None if any(stop == UNBOUNDED for _, _, stop, _ in restriction) else restriction

    def setup(self):
        self._consumers = {}
        self._assigned = {}  # topic -> {partition: next offset} the consumer is positioned at

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
        positions = dict(open_partitions)
        # Assigning again drops what the consumer has fetched ahead and starts its fetches over:
        # a poll then waits for the broker (measured: 0.5 to 1 s per poll, whatever was ready).
        # So the consumer stays assigned while it is where this restriction resumes.
        if self._assigned.get(topic) != positions:
            c.assign([TopicPartition(topic, p, nxt) for p, nxt in open_partitions])
        self._assigned[topic] = None  # unknown until this poll has run to its end
        messages = c.consume(self.poll_records, timeout=POLL_TIMEOUT_S)
        latest = {p: t for p, _, _, t in restriction}
        current = watermark.current_watermark()
        floor = None if current is None or current == MIN_TIMESTAMP else current.micros // 1000
        read, passed_stop = 0, False
        for m in messages:
            if m.error() is not None:
                if is_transient(m.error()):
                    logging.warning("Kafka %s: %s; retrying", topic, m.error())
                    continue
                raise KafkaException(m.error())
            p, first = m.partition(), positions[m.partition()]
            record = KafkaRecord(topic, p, m.offset(), m.key(), m.value(), m.timestamp()[1], first)
            # Records behind this are late: the partition's latest event time less the allowed
            # lateness, or, before its first record, the watermark the other partitions made.
            behind = floor if latest[p] == NO_TIME else latest[p] - self.allowed_lateness_ms
            element, event_time = self._decoded(record, behind)
            if not tracker.try_claim((p, m.offset(), NO_TIME if event_time is None else event_time)):
                passed_stop = True  # past this partition's stop offset (a bounded replay)
                continue
            read += 1
            positions[p] = m.offset() + 1
            if first != m.offset():  # transaction markers and compaction leave gaps; else a clue
                logging.warning("Kafka %s/%d: offsets %d..%d skipped", topic, p, first, m.offset() - 1)
            if event_time is not None:
                latest[p] = max(latest[p], event_time)
            at = event_time if event_time is not None else record.timestamp_ms if behind is None else behind
            yield beam.window.TimestampedValue(element, Timestamp(micros=at * 1000))
        try:
            self._advance(c, topic, tracker.current_restriction(), watermark)
        except KafkaException as e:
            if not is_transient(e.args[0]):
                raise
            logging.warning("Kafka %s: watermark not advanced: %s", topic, e)
        if not passed_stop:  # every record consumed was claimed: the consumer is at `positions`
            self._assigned[topic] = positions
        tracker.try_claim(CHECKPOINT)
        tracker.defer_remainder(Duration(seconds=0 if read else 0.2))

    def _decoded(self, record: KafkaRecord, behind: int | None):
        """(element, its event time): the raw record at its Kafka time without payloads; else its
        `Row`, or a dead letter (undecodable, from the future, or late) with no event time."""
        if self.payloads is None:
            return record, record.timestamp_ms
        try:
            row = self.payloads.row(record)
        except ValueError as e:
            return _dead_letter("DecodeAvro", str(e), record), None
        ahead_ms = row.event_time - record.timestamp_ms
        if self.max_skew_ms is not None and record.timestamp_ms >= 0 and ahead_ms > self.max_skew_ms:
            return _dead_letter("ReadFromKafka", (
                f"future: event time {row.event_time} is {ahead_ms} ms ahead of the record's Kafka timestamp "
                f"(more than the allowed clock skew of {self.max_skew_ms} ms)"), record, row.event_time), None
        late_ms = 0 if behind is None else behind - row.event_time
        if late_ms > 0:
            return _dead_letter("ReadFromKafka", (
                f"late: event time {row.event_time} is {late_ms} ms behind what its partition allows (its "
                f"latest event time read before it, less the allowed lateness of "
                f"{self.allowed_lateness_ms} ms)"), record, row.event_time), None
        return row, row.event_time

    def _advance(self, c, topic, restriction, watermark):
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
        candidate = Timestamp(micros=(min(seen) - self.allowed_lateness_ms) * 1000)
        current = watermark.current_watermark()
        if current is None or current == MIN_TIMESTAMP or candidate > current:
            watermark.set_watermark(candidate)


class _ReadTopicForeverDoFn(_ReadTopicDoFn):
    """The same reader with no end offsets: its output is unbounded."""

    @beam.DoFn.unbounded_per_element()
    def process(self, topic, tracker=beam.DoFn.RestrictionParam(),
                watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())):
        yield from super().process(topic, tracker, watermark)


def _dead_letter(stage: str, reason: str, record: KafkaRecord, event_time: int | None = None) -> DeadLetter:
    return DeadLetter(stage=stage, reason=reason, payload=record.value or b"", source=record.where(),
                      event_time=record.timestamp_ms if event_time is None else event_time,
                      origin=record.origin())
