"""The load of `benchmarks.serving`'s Kafka rows: requests on PREFIX.requests at a constant
rate, their replies read from PREFIX.replies, sent from the benchmark's own process (pinned to
the load's cores meanwhile: `pinned`)."""
from __future__ import annotations

import contextlib
import json
import os
import time


@contextlib.contextmanager
def pinned(cores: str):
    """This thread, and the threads it starts, on `cores` (taskset's list form) meanwhile."""
    had = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(c) for part in cores.split(",") for c in _core_range(part)} if cores else had)
    try:
        yield
    finally:
        os.sched_setaffinity(0, had)


def _core_range(part: str) -> range:
    first, _, last = part.partition("-")
    return range(int(first), int(last or first) + 1)


def kafka_attack(bootstrap: str, prefix: str, bodies: list, rate: int, duration: float) -> dict:
    """Requests on PREFIX.requests at `rate`/s: latency from each one's scheduled send time to
    its reply (a late send counts against the latency: no coordinated omission). The replies are
    read in a process of its own: a reader thread beside the sender held the GIL from it, and the
    sender from it, both adding to what was measured."""
    import multiprocessing
    import uuid

    from confluent_kafka import Producer

    run_id, n = uuid.uuid4().hex[:8], int(rate * duration)
    spawn = multiprocessing.get_context("spawn")  # this process runs librdkafka's threads: no fork
    done, (results, sink) = spawn.Event(), spawn.Pipe(duplex=False)
    collector = spawn.Process(target=_collect, args=(bootstrap, f"{prefix}.replies", run_id, n, done, sink))
    collector.start()
    time.sleep(3)  # the reply consumer's partitions assigned
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    scheduled, start = {}, time.perf_counter()
    for i in range(n):
        at = start + i / rate
        time.sleep(max(0.0, at - time.perf_counter()))
        correlation = f"{run_id}-{i}"
        scheduled[correlation] = at
        producer.produce(f"{prefix}.requests", value=json.dumps(bodies[i % len(bodies)]).encode(),
                         headers=[("correlation_id", correlation.encode())])
        producer.poll(0)
    producer.flush(10)
    sent_s = time.perf_counter() - start
    if not results.poll(10):  # every reply came, or 10 s passed: then what came
        done.set()
    answered = results.recv() if results.poll(10) else {}
    done.set()
    collector.join(10)
    ms = sorted((answered[c] - t) * 1000 for c, t in scheduled.items() if c in answered)
    pick = lambda q: round(ms[min(len(ms) - 1, int(q * len(ms)))], 3) if ms else None  # noqa: E731
    return {"rate": rate, "achieved": round(n / sent_s, 1), "requests": n,
            "errors": round(1 - len(ms) / n, 4), "p50_ms": pick(0.5), "p99_ms": pick(0.99),
            "max_ms": round(ms[-1], 3) if ms else None}


def _collect(bootstrap: str, topic: str, run_id: str, expected: int, done, sink) -> None:
    """Reads `topic` from its end: the time (`time.perf_counter`, the same clock in every process)
    each reply of `run_id` came, sent to `sink` once `expected` came or `done` is set."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{run_id}",
                         "auto.offset.reset": "latest", "fetch.wait.max.ms": 5})
    consumer.subscribe([topic])
    answered, mine = {}, f"{run_id}-"
    while len(answered) < expected and not done.is_set():
        m = consumer.poll(0.05)  # one at a time: a batch would wait for its count or timeout
        if m is not None and m.error() is None:
            correlation = dict(m.headers() or []).get("correlation_id", b"").decode()
            if correlation.startswith(mine):
                answered[correlation] = time.perf_counter()
    sink.send(answered)
    consumer.close()
