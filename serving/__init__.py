"""The serving plane: a plain Python process (not Beam) that answers prediction requests from
the newest verified model version and the online store, and logs what it served to Kafka.

It meets the learning plane only through published artefacts (model versions, profiles, Kafka
topics): it imports `core`, `models` and `stores`, never Beam, `transforms` or `pipelines`
(checked by the import-linter contracts in `setup.cfg`). Empty so far: the real-time serving
issue fills it.
"""
