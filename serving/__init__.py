"""The serving plane: a plain Python process (not Beam) that answers prediction requests from
the newest verified model version and the online store (`python -m serving`).

- `app`: the HTTP API (FastAPI on uvicorn): /predict, /healthz, /models;
- `live`: the newest verified version of each model, reloaded while serving;
- `features`: a request's features on arrival, with the learning plane's own functions.

It meets the learning plane only through published artefacts (model versions, profiles, Kafka
topics): it imports `core`, `models` and `stores`, never Beam, `transforms` or `pipelines`
(checked by the import-linter contracts in `.importlinter`). Not yet: logging what it served
to Kafka, recommendations, the Kafka request/reply (the real-time serving issue).
"""
