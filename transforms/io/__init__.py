"""Sources and sinks: `files` (Avro, CSV, JSONL as rows), `sinks` (one JSONL or Avro file per
output), `kafka` (decode, write with confirmed delivery), `kafka_read` (a Python splittable
reader of all partitions of a topic), `kafkaio` (Beam's Java KafkaIO, for endless reads on
Flink), `offsets` (commit a group's offsets once results are out)."""
