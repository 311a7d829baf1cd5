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
    its reply (a late send counts against the latency: no coordinated omission)."""
    import threading
    import uuid

    from confluent_kafka import Consumer, Producer

    run_id = uuid.uuid4().hex[:8]
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{run_id}",
                         "auto.offset.reset": "latest", "fetch.wait.max.ms": 5})
    consumer.subscribe([f"{prefix}.replies"])
    scheduled, answered, done = {}, {}, threading.Event()

    def collect():
        while not done.is_set():
            m = consumer.poll(0.05)  # one at a time: a batch would wait for its count or timeout
            if m is not None and m.error() is None:
                answered[dict(m.headers() or []).get("correlation_id", b"").decode()] = time.perf_counter()

    collector = threading.Thread(target=collect)
    collector.start()
    time.sleep(3)  # the reply consumer's partitions assigned
    start, n = time.perf_counter(), int(rate * duration)
    for i in range(n):
        at = start + i / rate
        time.sleep(max(0.0, at - time.perf_counter()))
        correlation = f"{run_id}-{i}"
        scheduled[correlation] = at
        producer.produce(f"{prefix}.requests", value=json.dumps(bodies[i % len(bodies)]).encode(),
                         headers=[("correlation_id", correlation.encode())])
        producer.poll(0)
    producer.flush(10)
    deadline = time.perf_counter() + 10
    while len(answered.keys() & scheduled.keys()) < n and time.perf_counter() < deadline:
        time.sleep(0.05)
    done.set()
    collector.join()
    consumer.close()
    ms = sorted((answered[c] - t) * 1000 for c, t in scheduled.items() if c in answered)
    pick = lambda q: round(ms[min(len(ms) - 1, int(q * len(ms)))], 3) if ms else None  # noqa: E731
    return {"rate": rate, "achieved": round(n / (time.perf_counter() - start), 1), "requests": n,
            "errors": round(1 - len(ms) / n, 4), "p50_ms": pick(0.5), "p99_ms": pick(0.99),
            "max_ms": round(ms[-1], 3) if ms else None}


