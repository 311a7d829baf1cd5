"""The reduced job's per-event work written with Quix Streams: the `peer:quix` rows of
`benchmarks.kafka_latency`.

    bash scripts/peer.sh install
    bash scripts/peer.sh run -m benchmarks.peer_quix --topic IN --out OUT

Kafka -> decode (schemaless Avro, `schemas/interaction.avsc`) -> `models.zoo:recommender`
predicts, then learns the stand-in label (`stand_in_label`) -> the prediction
(`schemas/prediction.avsc`, keyed by event id) to Kafka: what `benchmarks.kafka_latency`'s
reduced Beam job does per event, as a plain Quix Streams application (one `apply`, one
`to_topic`). It prints `ready` once its model is built, just before the application starts.

It runs in .venv-peer (Quix Streams 3.28 needs confluent-kafka < 2.13, the project pins 2.16.1),
with the project's Beam-free modules (`core`, `models`, `schemas`) on PYTHONPATH, so this
module must not import Beam. What it leaves out that ours does, so its numbers are not a like
for like on those points:
- event-time order: it applies events in the order it consumes them (each partition in offset
  order, partitions interleaved); ours buffers them until the watermark passes and applies
  them in (event time, event id) order. On a topic of several partitions the two orders, and
  then the predictions, differ; `kafka_latency` reports which order each row applied;
- durable state: the model lives in process memory (lost on a restart); ours keeps it in
  Beam state, a signed pickle written per firing;
- dead letters: a value that does not decode stops the application (Quix's default).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import uuid
import zlib

from core.interactions import impression_features
from core.records import Prediction
from models import factory

MODEL = "models.zoo:recommender"


def stand_in_label(event_id: str) -> bool:
    """The reduced job's label: about one event in ten clicked, the same in every process
    (`hash()` of a string is salted per process, so ours and the peer's labels would differ).

    >>> stand_in_label("imp-000000000"), sum(stand_in_label(f"imp-{i:09d}") for i in range(1000))
    (False, 94)
    """
    return zlib.crc32(event_id.encode()) % 10 == 0


class PredictThenLearn:
    """One model over all events, predict then learn, as `core.learning.Learner` applies an
    event of mode `both`: the prediction is made before the model learns its event."""

    def __init__(self, spec: str = MODEL):
        self.model, self.step = factory.build(spec), 0

    def __call__(self, fields: dict) -> dict:
        """An impression's fields -> its prediction, as the prediction schema's record."""
        x, y = impression_features(fields), stand_in_label(fields["event_id"])
        proba = self.model.predict_proba_one(x)
        prediction = Prediction(fields["event_id"], "default", fields["event_time"], y,
                                max(proba, key=proba.get) if proba else None, proba, self.step)
        self.model.learn_one(x, y)
        self.step += 1
        return prediction.to_avro()


def run(bootstrap: str, topic: str, out: str, group: str) -> None:
    """Runs the application until SIGTERM or Ctrl-C."""
    from quixstreams import Application
    from quixstreams.models.serializers.avro import AvroDeserializer, AvroSerializer

    import schemas

    state_dir = tempfile.mkdtemp(prefix="peer-quix-")  # Quix wants one; this app keeps no state there
    try:
        app = Application(broker_address=bootstrap, consumer_group=group, auto_offset_reset="earliest",
                          state_dir=state_dir, use_changelog_topics=False, loglevel="WARNING")
        source = app.topic(topic, value_deserializer=AvroDeserializer(schemas.load("interaction")))
        sink = app.topic(out, key_serializer="str", value_serializer=AvroSerializer(schemas.load("prediction")))
        sdf = app.dataframe(source).apply(PredictThenLearn())
        sdf.to_topic(sink, key=lambda prediction: prediction["event_id"])
        print("ready", flush=True)
        app.run()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer_quix", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--topic", required=True, help="interactions (impressions), schemaless Avro")
    parser.add_argument("--out", required=True, help="the topic the predictions go to")
    parser.add_argument("--group", default=f"peer-quix-{uuid.uuid4().hex[:8]}",
                        help="consumer group (default: a new one)")
    args = parser.parse_args(argv)
    run(args.bootstrap, args.topic, args.out, args.group)


if __name__ == "__main__":
    main()
