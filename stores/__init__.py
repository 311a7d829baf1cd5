"""Stores that outlive a job, SQLite by default:

- `snapshots`: durable learner and profile snapshots, so a restarted job resumes;
- `registry`: the model registry, signed model versions the learner publishes and the serving
  plane loads;
- `online`: the online store, each entity's latest profile, for features at request time;
- `toplists`: the batch store, each user's top items computed ahead, switched a whole batch at a time;
- `experiments`: each experiment's routing state (one owner, many serving replicas) and events;
- `sqlite`: what they share (locations, connections).

Imports neither Beam nor a web framework.
"""
