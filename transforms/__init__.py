"""Beam transforms of the learning plane, the same in batch and in streaming.

- `io`: sources and sinks (files; Kafka read, write and offset commits; the KafkaIO route);
- `recsys`: interactions validated, impressions labelled by their delayed outcomes;
- `features`: point-in-time entity features, and their backfill into a store;
- `learning`: rows to examples, and online learning per model key (batch and streaming);
- `evaluation`: windowed and progressive metrics, served predictions meeting delayed labels;
- shared steps: `chunks` (one element per key and bundle through a grouping), `coders`
  (record coders), `eventtime` (timestamps and timers of ordered stages), `shards` (many
  entities per key), `deadlines` (a shard of entries waiting for an event time), `livecache`
  (what a stateful stage keeps live between bundles, per process), `progress` (counts),
  `runners` (what a transform needs to know of the runner), `statecache` (Beam's state cache
  weighed cheaply: installed here, in every process that runs our transforms).

Transforms build on `core`, `models` and `stores`; they never import `pipelines`.
"""
from transforms import statecache

statecache.install()
