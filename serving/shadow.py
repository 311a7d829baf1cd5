"""A shadow model scores what the control served, off the request path and out of the
serving process.

The route answers with the control's ranking (or prediction) and hands a small job (the user,
the request's extra candidates, the impressions served; or /predict's rows) to `ShadowScorer.submit`, which only puts it on a bounded queue
(a full queue drops it and counts it: the shadow never slows an answer down). A worker
process, started with the server (on the cores the server is not pinned to, if any), ranks the
candidates with the shadow's newest verified version (its own registry and online store
connections, and its own popular items, refreshed as the server's are: at a refresh the two
may differ for a moment) and logs, for each impression served,
the shadow's probability of that item, its rank there, and the item the shadow would have shown
in that slot (`schemas/shadow_prediction.avsc`; for /predict, the probability only), to a log
beside the event log. The worker runs at the idle priority (SCHED_IDLE): it never delays the
server, or the clients it may share a core with. A process, not
a thread: a shadow ranking costs what the control's does, and in the server's interpreter it
would hold the lock every answer waits for. Any failure of the shadow (no version yet, a model
that raises) is counted and logged, and never reaches a response.
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import queue
import threading

LOG = logging.getLogger(__name__)
OUTCOMES = ("scored", "failed", "no_model", "dropped")


@dataclasses.dataclass(frozen=True)
class ShadowJob:
    experiment: str
    model_key: str
    user_id: str
    device: str | None
    genres: tuple
    extra: tuple  # the request's extra candidates, besides the popular items
    now_ms: int
    shown: tuple  # (impression id, item id, position) of each impression served
    rows: tuple = ()  # /predict's: (impression id, the request's fields) of each row, and no ranking

    @classmethod
    def of_ranking(cls, assigned, user_id, device, genres, extra, now_ms, items) -> ShadowJob:
        """The job of a ranking served (/recommendations' `items`)."""
        return cls(assigned.experiment, assigned.shadow, user_id, device, tuple(genres), tuple(extra), now_ms,
                   tuple((i.impression_id, i.item_id, i.position) for i in items))

    @classmethod
    def of_rows(cls, assigned, request_id, rows, now_ms) -> ShadowJob:
        """The job of /predict's rows, logged as `request_id`, `request_id`-1, ..."""
        return cls(assigned.experiment, assigned.shadow, rows[0]["user_id"], None, (), (), now_ms, (),
                   tuple((request_id if i == 0 else f"{request_id}-{i}", row) for i, row in enumerate(rows)))


@dataclasses.dataclass(frozen=True)
class ShadowSettings:
    model_key: str  # the shadow model, loaded at start (a job may name another: it is loaded then)
    registry: str
    key_file: str | None
    online_store: str
    log: str  # where the shadow's predictions go
    schema_registry: str | None
    poll_s: float
    candidates: int  # the popular items ranked (the server's --candidates)
    candidates_refresh_s: float


class ShadowScorer:
    """Jobs are kept in a list and sent in batches every `send_s` (one hand-off to the queue's
    feeder thread per batch, not per request: each hand-off wakes a thread in the server);
    at most `maxsize` wait."""

    def __init__(self, settings: ShadowSettings, maxsize: int = 1000, send_s: float = 0.05):
        context = multiprocessing.get_context("spawn")  # not a fork of a server with threads
        self._queue = context.Queue(maxsize // 10)  # of batches
        self._pending: list[ShadowJob] = []
        self._maxsize, self._send_s = maxsize, send_s
        self._stopping = threading.Event()
        self._sender = threading.Thread(target=self._send, name="shadow-sender", daemon=True)
        # Each count has one writer (the worker's, or the server's "dropped"): no lock.
        self._counts = context.Array("q", len(OUTCOMES), lock=False)
        self._process = context.Process(target=_work, args=(settings, self._queue, self._counts),
                                        name="shadow", daemon=True)

    @property
    def counts(self) -> dict:
        return dict(zip(OUTCOMES, self._counts[:]))

    def start(self) -> None:
        self._process.start()
        self._sender.start()

    def submit(self, job: ShadowJob) -> None:
        if len(self._pending) < self._maxsize:
            self._pending.append(job)  # atomic; the sender swaps the list out
        else:
            self._counts[OUTCOMES.index("dropped")] += 1

    def _send(self) -> None:
        while not self._stopping.wait(self._send_s):
            batch, self._pending = self._pending, []
            if batch:
                try:
                    self._queue.put_nowait(batch)
                except queue.Full:  # the worker is behind: these are dropped, and counted
                    self._counts[OUTCOMES.index("dropped")] += len(batch)

    def stop(self) -> None:
        self._stopping.set()
        self._sender.join(timeout=5)
        try:
            self._queue.put(None, timeout=1)
        except queue.Full:
            pass
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.terminate()
        self._queue.close()
        self._queue.join_thread()
        self._queue = None  # its semaphores go with it, not at exit (where the tracker warns of them)


def _work(settings: ShadowSettings, batches, counts) -> None:
    """The worker process: batches of jobs until None."""
    from models import serde
    from serving.candidates import PopularItems
    from serving.eventlog import open_event_log
    from serving.live import LiveModels
    from serving.periodic import Periodic
    from stores.online import open_online_store
    from stores.registry import open_registry

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Answers first: the shadow takes only the CPU that nothing else wants. SCHED_IDLE, not just a
    # nice level: under CFS a niced task still holds a core for a slice before a woken one runs.
    if hasattr(os, "sched_setscheduler"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(19)
    if hasattr(os, "sched_setaffinity"):  # a server pinned to cores: its shadow runs on the others
        others = set(range(os.cpu_count() or 1)) - os.sched_getaffinity(0)
        if others:
            os.sched_setaffinity(0, others)
    keys = serde.KeySource(file=settings.key_file, store=settings.registry).resolve()
    live = LiveModels(open_registry(settings.registry), keys, [settings.model_key])
    store = open_online_store(settings.online_store)
    popular = PopularItems(store, settings.candidates)
    refreshes = [Periodic("shadow-models", settings.poll_s, live.refresh),
                 Periodic("shadow-candidates", settings.candidates_refresh_s, popular.refresh)]
    for refresh in refreshes:
        refresh.start()
    log = open_event_log(settings.log, settings.schema_registry, "shadow_prediction")
    try:
        while (batch := batches.get()) is not None:
            for job in batch:
                try:
                    outcome = _score(job, live, popular, store, log)
                except Exception as e:  # noqa: BLE001 (the shadow's failure is counted, never the request's)
                    outcome = "failed"
                    if counts[OUTCOMES.index("failed")] < 10 or counts[OUTCOMES.index("failed")] % 1000 == 0:
                        LOG.error("shadow %s failed (%d before): %r", job.model_key,
                                  counts[OUTCOMES.index("failed")], e)
                counts[OUTCOMES.index(outcome)] += 1
    finally:
        for refresh in refreshes:
            refresh.stop()
        log.close()
        store.close()


def _score(job: ShadowJob, live, popular, store, log) -> str:
    """Ranks the job's candidates with the shadow and logs its predictions; the outcome."""
    from core.ranking import score

    if job.model_key not in live.model_keys:  # another shadow since the file changed
        live.watch([job.model_key])
        live.refresh()
    served = live.get(job.model_key)
    if served is None:
        return "no_model"
    if job.rows:
        return _predict(job, served, store, log)
    current = popular.current
    ranked, _ = score(served.model, store, job.user_id, job.device, current.candidates(job.extra), job.now_ms,
                      job.genres, known=current.profiles)
    places = {s.item_id: (rank, s.probability) for rank, s in enumerate(ranked)}
    for impression_id, item_id, position in job.shown:
        rank, probability = places.get(item_id, (None, None))
        log.write({"impression_id": impression_id, "event_time": job.now_ms, "user_id": job.user_id,
                   "item_id": item_id, "experiment": job.experiment, "model_key": job.model_key,
                   "model_version": served.version.version, "probability": probability, "rank": rank,
                   "position": position, "shadow_item": ranked[position].item_id if position < len(ranked) else None})
    return "scored"


def _predict(job: ShadowJob, served, store, log) -> str:
    """/predict's rows, each with the features the server computed for it (the same profiles
    and time), and the shadow's probability logged."""
    from core.interactions import impression_features
    from core.requests import lookup, request_fields

    for impression_id, row in job.rows:
        fields = request_fields(row, job.now_ms, lookup(store, row))
        probability = served.model.predict_proba_one(impression_features(fields)).get(True, 0.0)
        log.write({"impression_id": impression_id, "event_time": job.now_ms, "user_id": job.user_id,
                   "item_id": row["item_id"], "experiment": job.experiment, "model_key": job.model_key,
                   "model_version": served.version.version, "probability": probability, "rank": None,
                   "position": row.get("position"), "shadow_item": None})
    return "scored"
