"""The online store, embedded (SQLite) and shared (Redis): a profile never moves back in time,
whoever writes it and in whatever order."""
import multiprocessing
import random

import pytest

from stores.online import open_online_store


@pytest.fixture(params=["sqlite", "redis"])
def location(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "online.sqlite")
    return request.getfixturevalue("redis_url")


def _write(location: str, seed: int, n: int) -> None:
    """Writes user profiles whose state is their clock, in a shuffled order."""
    store, rng = open_online_store(location), random.Random(seed)
    writes = [(f"u{i % 50}", t) for i in range(n) for t in [rng.randrange(1, 10_000)]]
    for entity, clock in writes:
        store.put("user", {entity: ([clock, {"seed": seed}], clock)})
    store.close()


def test_a_profile_keeps_its_latest_write_whatever_the_order(location):
    store = open_online_store(location)
    assert (store.get("user", ["u1"]), store.count("user"), store.clock(), list(store.scan("user"))) == \
           ({}, 0, None, [])
    store.put("user", {"u1": ([1, {"a": 1.5}], 5_000), "u2": ([2, {}], 7_000)})
    store.put("user", {"u1": ([0, {}], 4_000), "u2": ([3, {"b": 2.0}], 7_000)})  # older: kept; same time: taken
    store.put("item", {f"i{n}": ([None, {}], n) for n in range(2_500)})  # more than one batch
    assert store.get("user", ["u1", "u2", "u3"]) == {"u1": ([1, {"a": 1.5}], 5_000), "u2": ([3, {"b": 2.0}], 7_000)}
    assert (store.count("user"), store.count("item"), store.clock()) == (2, 2_500, 7_000)
    assert sorted(store.scan("user")) == [("u1", [1, {"a": 1.5}], 5_000), ("u2", [3, {"b": 2.0}], 7_000)]
    assert len(store.get("item", [f"i{n}" for n in range(0, 2_500, 3)])) == 834


def test_a_server_keeping_decoded_states_reads_every_new_write(location):
    # A server keeps states decoded by their text (`decoded`): it reads a profile written by
    # another process after it read the old one, and the same states as a plain reader.
    reader, writer, plain = (open_online_store(location, decoded=2), open_online_store(location),
                             open_online_store(location))
    for clock in range(1, 30):
        writer.put("user", {f"u{clock % 3}": ([clock, {"imp@1h": clock / 7}], clock)})
        writer.put("item", {"i": ([clock, ["drama"]], clock)})
        asked = ["u0", "u1", "u2", "u0"]
        assert reader.get("user", asked) == plain.get("user", asked) and reader.get("user", ["u1"])["u1"][1] <= clock
        assert reader.get("item", ["i"]) == {"i": ([clock, ["drama"]], clock)}
        assert sorted(reader.scan("user")) == sorted(plain.scan("user"))
    shared = reader.get("item", ["i"])["i"][0]
    assert reader.get("item", ["i"])["i"][0] is shared  # one decoding while the text is the same
    writer.put("item", {"i": ([99, ["news"]], 99)})
    assert reader.get("item", ["i"])["i"] == ([99, ["news"]], 99) and shared == [29, ["drama"]]


def test_concurrent_writers_leave_each_profile_at_its_latest_clock(location):
    open_online_store(location).close()
    writers = [multiprocessing.get_context("spawn").Process(target=_write, args=(location, seed, 400))
               for seed in (1, 2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    latest = {}
    for seed in (1, 2):
        rng = random.Random(seed)
        for i in range(400):
            clock = rng.randrange(1, 10_000)
            latest[f"u{i % 50}"] = max(latest.get(f"u{i % 50}", 0), clock)
    held = open_online_store(location).get("user", list(latest))
    assert {entity: clock for entity, (_, clock) in held.items()} == latest
    assert all(state[0] == clock for state, clock in held.values())


def test_unknown_locations_name_the_ones_there_are():
    with pytest.raises(ValueError, match="have: SQLite file paths, sqlite:///PATH, redis://"):
        open_online_store("memcached://localhost")
    with pytest.raises(ConnectionError, match="scripts/redis.sh start"):
        open_online_store("redis://127.0.0.1:1/0")
