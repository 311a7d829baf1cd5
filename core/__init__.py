"""What both planes compute, without Beam: the learning plane (Beam pipelines) and the serving
plane (a plain Python process) import it alike, so training and serving cannot drift apart.

- `records`: the records that flow between steps (`Row`, `Example`, `Prediction`, ...);
- `decoding`: file records and event times parsed from bytes and text;
- `profiles`, `features`: entity profiles and the point-in-time features computed from them;
- `requests`, `ranking`: a served request's features, and candidates ranked for a user (by the
  server on request and by the batch job ahead alike);
- `interactions`: what an interaction must hold, and an impression's model features;
- `warmstart`: a registered model version as a model factory (the learner's warm start);
- `learning`: the learner's core: models per key, events applied in order, predict then learn;
- `scoring`: river metrics over predictions in event order;
- `kafka`: Kafka clients (consumer, producer, offsets) and the Avro encoding of records.

Imports neither Beam nor a web framework (checked by the import-linter contracts in
`setup.cfg`).
"""
