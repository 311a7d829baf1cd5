"""The serving plane: a plain Python process (not Beam) that answers prediction requests from
the newest verified model version and the online store (`python -m serving`).

- `app`, `api`, `oip`: the HTTP API (FastAPI on uvicorn): /predict, /recommendations, /events,
  /healthz, /models, /metrics, the Open Inference Protocol; `kafka_rpc`: Kafka request/reply;
- `service`: what the routes call: predictions and rankings (`core.requests`, `core.ranking`:
  the learning plane's own functions) or the batch job's lists (`stores.toplists`), the slots
  filled with some `exploration`, every impression logged (`eventlog`) and counted (`metrics`);
- `live`: the newest verified version of each model, reloaded while serving; `candidates`: the
  popular items, refreshed in the background (`periodic`);
- `experiment`: the experiment a server routes by (`experiments.routing`: its file, reloaded,
  and the state its owner writes); `shadow`: a shadow model scoring what control served, in a
  worker process.

It meets the learning plane only through published artefacts (model versions, profiles, top
lists, Kafka topics): it imports `experiments`, `core`, `models` and `stores`, never Beam, `transforms` or
`pipelines` (checked by the import-linter contracts in `.importlinter`).
"""
