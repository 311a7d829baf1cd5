"""The learning job's Kafka consumer lag, as the serving process watches it: the records of the
topic its consumer group has not committed yet (end offsets minus committed offsets, summed over
partitions; a partition the group never committed counts from its first record)."""
from __future__ import annotations

import logging

from confluent_kafka import KafkaException, TopicPartition

from core import kafka

LOG = logging.getLogger(__name__)


class ConsumerLag:
    def __init__(self, location: str, group: str):
        bootstrap, self.topic = kafka.parse_location(location, "consumer lag")
        self.group = group
        self.consumer = kafka.consumer(bootstrap, group)  # only asks the group's offsets: never joins it
        self.value: int | None = None  # the last measurement (None: the broker did not answer)
        self._said = None

    def refresh(self) -> None:
        """Measures again; a broker that is away makes the lag unknown (None), not an error."""
        try:
            self.measure()
            self._said = None
        except (KafkaException, RuntimeError) as e:
            self.value = None
            if repr(e) != self._said:
                LOG.warning("consumer lag of %s on %s unknown: %s", self.group, self.topic, e)
                self._said = repr(e)

    def measure(self) -> int:
        topic = self.consumer.list_topics(self.topic, timeout=5).topics[self.topic]
        if topic.error is not None:
            raise RuntimeError(f"topic {self.topic}: {topic.error}")
        partitions = [TopicPartition(self.topic, p) for p in sorted(topic.partitions)]
        committed = self.consumer.committed(partitions, timeout=5)
        lag = 0
        for tp in committed:
            low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, tp.partition), timeout=5)
            lag += high - max(tp.offset, low) if tp.offset >= 0 else high - low
        self.value = lag
        return lag

    def close(self) -> None:
        self.consumer.close()
