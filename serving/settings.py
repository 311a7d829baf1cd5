"""The serving process's settings (`python -m serving`'s flags)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Settings:
    registry: str  # the model registry (stores.registry) the learning plane publishes to
    online_store: str  # the online store of profiles (stores.online)
    event_log: str  # where served impressions and outcomes go (serving.eventlog)
    model: str = "recommender"  # the model key that predicts and ranks
    key_file: str | None = None  # the keys that check versions; default $STREAMML_STATE_KEY, else <registry>.key
    poll_s: float = 0.2  # how often the registry is asked for newer versions
    schema_registry: str | None = None  # for a Kafka event log in the Confluent wire format
    candidates: int = 100  # the most popular items that /recommendations ranks
    candidates_refresh_s: float = 5.0
    epsilon: float = 0.05  # exploration: the share of slots filled at random among the candidates
    cache_s: float = 1.0  # how long a user's ranking is reused (0: never)
    api_token: str | None = None  # when set, POST /events needs "Authorization: Bearer <token>"
    seed: int | None = None  # of the exploration's draws (None: from the system)
    kafka_requests: str | None = None  # kafka://HOST:PORT/PREFIX: also answer /predict requests from Kafka
    batch_store: str | None = None  # the batch job's top lists (stores.toplists), for ?source=batch
    batch_first: bool = False  # answer /recommendations from the batch store when it covers the user
    experiment: str | None = None  # an experiment file (experiments.config): its variants serve live rankings
    experiment_store: str | None = None  # its routing state (stores.experiments); default: the registry's database
    alerts: str | None = None  # the learning plane's alerts for the dashboard: a JSON-lines file or kafka://HOST:PORT/TOPIC
    consumer_lag: str | None = None  # kafka://HOST:PORT/TOPIC: the learning job's topic, whose consumer lag is watched
    consumer_group: str = "streamml-recommend"  # the learning job's consumer group
