"""Endless Kafka streams on Flink, through Beam's Java KafkaIO.

Beam 2.62's portable Flink runner does not pass a Python splittable DoFn's watermark on in
streaming (apache/beam#19637): the project's Python reader (`transforms.io.kafka_read`) delivers
records on Flink but event time never advances, so no event-time timer fires. The runner
translates Java's unbounded `Read` natively instead, with a watermark per partition; its one
Java step (KafkaIO's conversion of a record to a row) runs in a Java SDK harness embedded in
the TaskManager, so no Docker is needed. `scripts/flink.sh install` puts KafkaIO's jars on the
job server's class path (shipped to the TaskManagers with every job) and writes the launcher
of the expansion service that expands this transform (`transforms.runners.kafka_expansion_jar`).

Records come out as the same `KafkaRecord`s as the Python reader's, stamped with their Kafka
(create) timestamp. The watermark of a partition is the latest timestamp read from it; once a
partition is caught up, it is the wall-clock time (KafkaIO's create-time policy), so after a
backlog is replayed, records stamped earlier than "now" are late.
"""
from __future__ import annotations

import glob
import os

import apache_beam as beam

from core.kafka import KafkaRecord
from transforms.runners import kafka_expansion_jar


class ReadWithKafkaIO(beam.PTransform):
    """Every partition of `topics` as `KafkaRecord`s, read by Beam's Java KafkaIO.

    Starts at `group_id`'s committed offsets, else the earliest (or, with `start_time_ms`, at
    the first records stamped at or after it, in every partition). Commits nothing itself:
    `transforms.io.offsets.CommitOffsets` commits once results are delivered.
    """

    def __init__(self, bootstrap: str, topics, group_id: str, start_time_ms: int | None = None,
                 expansion_jar: str | None = None):
        super().__init__()
        self.bootstrap, self.topics, self.group_id = bootstrap, list(topics), group_id
        self.start_time_ms, self.expansion_jar = start_time_ms, expansion_jar

    def expand(self, pbegin):
        from apache_beam.io.kafka import ReadFromKafka

        return (pbegin
                | "KafkaIO" >> ReadFromKafka(
                    consumer_config={"bootstrap.servers": self.bootstrap, "group.id": self.group_id,
                                     "auto.offset.reset": "earliest", "enable.auto.commit": "false"},
                    topics=self.topics, start_read_time=self.start_time_ms,
                    timestamp_policy=ReadFromKafka.create_time_policy, with_metadata=True,
                    expansion_service=expansion_service(self.expansion_jar))
                | "ToKafkaRecords" >> beam.Map(_to_record))


def expansion_service(jar: str | None = None):
    """Beam's Java expansion service from the project's launcher jar, expanding KafkaIO's read
    as a primitive unbounded Read (which Flink runs natively) and its Java steps in an
    EMBEDDED harness; it stages one small jar (the default would stage its whole class path)."""
    from apache_beam.transforms.external import JavaJarExpansionService

    jar = jar or kafka_expansion_jar()
    kafkaio = sorted(glob.glob(os.path.join(os.path.dirname(jar), "lib", "beam-sdks-java-io-kafka-*.jar")))
    if not kafkaio:
        raise FileNotFoundError(f"no KafkaIO jar beside {jar}: run `bash scripts/flink.sh install`")
    return JavaJarExpansionService(jar, extra_args=[
        "{{PORT}}", "--experiments=use_deprecated_read", "--defaultEnvironmentType=EMBEDDED",
        f"--filesToStage={kafkaio[-1]}"])


def _to_record(row) -> KafkaRecord:
    return KafkaRecord(row.topic, row.partition, row.offset, row.key, row.value, row.timestamp)
