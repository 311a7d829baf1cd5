"""A shadow model scores what the control served, off the request path.

The route answers with the control's ranking and hands the request to `ShadowScorer.submit`,
which only puts it on a bounded queue (a full queue drops it and counts it: the shadow never
slows an answer down). A thread ranks the same candidates with the shadow's newest version and
logs, for each impression served, the shadow's probability of that item, its rank there, and
the item the shadow would have shown in that slot (`schemas/shadow_prediction.avsc`), to a log
beside the event log. Any failure of the shadow (no version yet, a model that raises) is
counted and logged, and never reaches a response.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading

from core.ranking import score

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ShadowJob:
    experiment: str
    model_key: str
    user_id: str
    device: str | None
    genres: tuple
    candidates: object  # the popular items' candidates the control ranked
    known: object  # their profiles
    now_ms: int
    shown: tuple  # (impression id, item id, position) of each impression served


class ShadowScorer:
    def __init__(self, live, store, log, maxsize: int = 1000):
        self.live, self.store, self.log = live, store, log
        self.counts = {"scored": 0, "dropped": 0, "failed": 0, "no_model": 0}
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: ShadowJob) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.counts["dropped"] += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.log.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._score(job)
            except Exception as e:  # noqa: BLE001 (the shadow's failure is counted, never the request's)
                self.counts["failed"] += 1
                if self.counts["failed"] <= 10 or self.counts["failed"] % 1000 == 0:
                    LOG.error("shadow %s failed (%d so far): %r", job.model_key, self.counts["failed"], e)

    def _score(self, job: ShadowJob) -> None:
        served = self.live.get(job.model_key)
        if served is None:
            self.counts["no_model"] += 1
            return
        ranked, _ = score(served.model, self.store, job.user_id, job.device, job.candidates, job.now_ms,
                          job.genres, known=job.known)
        places = {s.item_id: (rank, s.probability) for rank, s in enumerate(ranked)}
        for impression_id, item_id, position in job.shown:
            rank, probability = places.get(item_id, (None, None))
            self.log.write({"impression_id": impression_id, "event_time": job.now_ms, "user_id": job.user_id,
                            "item_id": item_id, "experiment": job.experiment, "model_key": job.model_key,
                            "model_version": served.version.version, "probability": probability, "rank": rank,
                            "position": position,
                            "shadow_item": ranked[position].item_id if position < len(ranked) else None})
        self.counts["scored"] += 1
