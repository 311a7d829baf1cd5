"""The online store: the latest profile of each entity (`core.profiles`), with its event-time
clock, published by the learning plane's feature stages and read by the serving plane.

A profile is stored as JSON (its `state()`: counters and times; nothing is unpickled), under
its kind (`user`, `item`) and entity id, with the event time of the last event it applied. A
write never moves a profile back in time: of two writes, the one with the later clock stays
(a replayed or retried stage may write an older profile after a newer one).

`OnlineStore` is the interface; `open_online_store(location)` picks the implementation: SQLite,
the embedded default (several processes on one machine may share the file), or Redis, where
learners and servers on several machines share one store.

>>> store = open_online_store(":memory:")
>>> store.put("user", {"u1": ([None, {}], 5_000), "u2": ([None, {}], 7_000)})
>>> store.put("user", {"u1": ([1, {"imp@1h": 1.0}], 4_000)})  # older than what it holds: kept as is
>>> store.get("user", ["u1", "u3"])
{'u1': ([None, {}], 5000)}
>>> store.clock()
7000
>>> store.put("user", {TASTE_ALARMS: ([6_000], 6_000)})  # the taste alarms' times, with the users'
>>> store.count("user"), store.get("user", ["u2", TASTE_ALARMS])[TASTE_ALARMS]
(2, ([6000], 6000))
"""
from __future__ import annotations

import functools
import json
from typing import Protocol

from stores.sqlite import connect, sqlite_path

# The stages' own records among the profiles of a kind, not entities: scans and counts skip
# them. One so far: the taste alarms' times (`monitoring.taste`), kept as a user "profile" so
# that a server reads them with the user's profile in one query.
STAGE_RECORD = "\x00"
TASTE_ALARMS = STAGE_RECORD + "taste-alarms"
STAGE_RECORDS = (TASTE_ALARMS,)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    kind TEXT NOT NULL, entity TEXT NOT NULL, clock_ms INTEGER NOT NULL, state TEXT NOT NULL,
    PRIMARY KEY (kind, entity));
"""


class OnlineStore(Protocol):
    """What the feature stages (put) and the servers (get) need from an online store."""

    def put(self, kind: str, profiles: dict) -> None: ...

    def get(self, kind: str, entities) -> dict: ...

    def scan(self, kind: str): ...

    def count(self, kind: str) -> int: ...

    def clock(self) -> int | None: ...

    def close(self) -> None: ...


def open_online_store(location: str, decoded: int = 0) -> OnlineStore:
    """The online store at `location`: a SQLite file path (or `sqlite:///relative`,
    `sqlite:////absolute`), or a Redis URL (`redis://host:port/db`).

    `decoded`: how many decoded states to keep, by their JSON text (a server's: the states of
    the users and items it is asked about most are then decoded once per change, not once per
    request, a fifth of a /predict). The states it returns are then shared between calls: read
    them, never change them (the profiles copy what they keep)."""
    loads = functools.lru_cache(maxsize=decoded)(json.loads) if decoded else json.loads
    if location.startswith(("redis://", "rediss://")):
        return RedisOnlineStore(location, loads=loads)
    return SQLiteOnlineStore(sqlite_path(location, "online store", "stores.online.OnlineStore", ("redis://",)), loads)


class SQLiteOnlineStore:
    """An `OnlineStore` in one SQLite file (WAL: servers read while the stages write)."""

    def __init__(self, path: str, loads=json.loads):
        self.path, self._loads = path, loads
        self._db = connect(path, _SCHEMA)

    def put(self, kind: str, profiles: dict) -> None:
        """Writes {entity: (state, clock ms)} in one transaction, each unless the store holds a
        later one."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO profiles VALUES (?, ?, ?, ?) ON CONFLICT (kind, entity) DO UPDATE SET "
                "clock_ms = excluded.clock_ms, state = excluded.state WHERE excluded.clock_ms >= profiles.clock_ms",
                [(kind, entity, int(clock), json.dumps(state)) for entity, (state, clock) in profiles.items()])

    def get(self, kind: str, entities) -> dict:
        """{entity: (state, clock ms)} of those `entities` it holds."""
        entities = list(dict.fromkeys(entities))
        found = {}
        for i in range(0, len(entities), 500):  # SQLite's limit on parameters
            part = entities[i:i + 500]
            rows = self._db.execute(f"SELECT entity, state, clock_ms FROM profiles WHERE kind = ? AND entity IN "
                                    f"({', '.join('?' * len(part))})", (kind, *part)).fetchall()
            found.update((entity, (self._loads(state), clock)) for entity, state, clock in rows)
        return found

    def scan(self, kind: str):
        """(entity, state, clock ms) of every `kind` profile it holds (not the stages' own records)."""
        for entity, state, clock in self._db.execute(
                "SELECT entity, state, clock_ms FROM profiles WHERE kind = ? AND unicode(entity) != 0",
                (kind,)).fetchall():
            yield entity, self._loads(state), clock

    def count(self, kind: str) -> int:
        """How many `kind` profiles it holds (not the stages' own records)."""
        return self._db.execute("SELECT COUNT(*) FROM profiles WHERE kind = ? AND unicode(entity) != 0",
                                (kind,)).fetchone()[0]

    def clock(self) -> int | None:
        """The latest event time any profile has applied (how fresh the store is), or None."""
        return self._db.execute("SELECT MAX(clock_ms) FROM profiles").fetchone()[0]

    def close(self):
        self._db.close()


# Keeps a write only when it is not older than the profile held, and the store's newest clock.
_PUT = """
local newest = tonumber(redis.call('GET', KEYS[2]) or '-1')
for i = 1, #ARGV, 3 do
  local clock = tonumber(ARGV[i + 1])
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  if not old or tonumber(string.sub(old, 1, string.find(old, ':', 1, true) - 1)) <= clock then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1] .. ':' .. ARGV[i + 2])
  end
  if clock > newest then newest = clock end
end
redis.call('SET', KEYS[2], string.format('%d', newest))
"""


class RedisOnlineStore:
    """An `OnlineStore` in Redis: a hash per kind (`streamml:profiles:<kind>`, entity ->
    "<clock ms>:<state JSON>"), written by a script so that the check and the write are one step."""

    def __init__(self, url: str, prefix: str = "streamml:", loads=json.loads):
        import redis

        self.url, self.prefix, self._loads = url, prefix, loads
        self._redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10,
                                           retry_on_timeout=True, health_check_interval=30)
        try:
            self._redis.ping()
        except redis.ConnectionError as e:
            raise ConnectionError(f"cannot reach Redis at {url} (bash scripts/redis.sh start runs one on "
                                  f"loopback): {e}") from None
        self._put = self._redis.register_script(_PUT)

    def put(self, kind: str, profiles: dict) -> None:
        items = list(profiles.items())
        for i in range(0, len(items), 1000):
            args = [v for entity, (state, clock) in items[i:i + 1000]
                    for v in (entity, int(clock), json.dumps(state))]
            self._put(keys=[self._hash(kind), f"{self.prefix}clock"], args=args)

    def get(self, kind: str, entities) -> dict:
        entities = list(dict.fromkeys(entities))
        if not entities:
            return {}
        values = self._redis.hmget(self._hash(kind), entities)
        return {entity: _parse(value, self._loads) for entity, value in zip(entities, values) if value is not None}

    def scan(self, kind: str):
        for entity, value in self._redis.hscan_iter(self._hash(kind)):
            if not entity.startswith(STAGE_RECORD.encode()):
                state, clock = _parse(value, self._loads)
                yield entity.decode(), state, clock

    def count(self, kind: str) -> int:
        return self._redis.hlen(self._hash(kind)) - sum(self._redis.hexists(self._hash(kind), e) for e in STAGE_RECORDS)

    def clock(self) -> int | None:
        value = self._redis.get(f"{self.prefix}clock")
        return None if value is None else int(value)

    def close(self):
        self._redis.close()

    def _hash(self, kind: str) -> str:
        return f"{self.prefix}profiles:{kind}"


def _parse(value: bytes, loads=json.loads) -> tuple:
    clock, _, state = value.partition(b":")
    return loads(state), int(clock)
