"""What the dashboard shows and `/metrics` reports of it, one snapshot per tick (`TICK_S`).

A snapshot is taken on a background thread and swapped in whole (`Board.current`): the page
(`serving.dashboard`, over server-sent events) and a Prometheus scrape (`serving.metrics`) read
the same one, so they agree at every moment; each carries its `seq`.

Per model served (and its experiment variant): the version and its age; the learner's windowed
scores as published with the version (`core.progressive`: log loss, ROC AUC, CTR, calibration
= mean prediction / CTR, over its last labels) and the label delay (now minus the event time of
the newest label the version learned). The server's own traffic over the last `RATE_WINDOW_S`
seconds (requests/s, latency p50 and p99, the dashboard's and scrapes' requests left out), the
learning job's Kafka consumer lag, the experiment's state and canary weight. Events: the
learning plane's alerts (`serving.alert_feed`) and the rollbacks among the versions it loads,
each marked once.
"""
from __future__ import annotations

import collections
import time

from experiments import routing
from serving.periodic import Periodic

TICK_S = 1.0
LAG_S = 5.0  # between measurements of the consumer lag (a few calls to the broker each)
HISTORY = 900  # snapshots kept for a page that opens (15 minutes at one a second)
EVENTS = 200  # the newest events kept


class Board:
    def __init__(self, service, alerts=None, lag=None):
        self.service, self.alerts, self.lag = service, alerts, lag
        self.current: dict | None = None
        self.history: collections.deque = collections.deque(maxlen=HISTORY)
        self.events: collections.deque = collections.deque(maxlen=EVENTS)
        self.counts: collections.Counter = collections.Counter()  # events by kind, since the start
        self._seen_versions: dict[str, int] = {}
        self._seq = 0
        self._jobs = []

    def start(self) -> None:
        """Measures the lag and takes a snapshot now, then each in the background."""
        self._jobs = ([Periodic("consumer-lag", LAG_S, self.lag.refresh)] if self.lag is not None else []) + \
            [Periodic("dashboard", TICK_S, self.tick)]
        for job in self._jobs:
            job.start()

    def stop(self) -> None:
        for job in self._jobs:
            job.stop()
        for source in (self.alerts, self.lag):
            if source is not None:
                source.close()

    def tick(self) -> dict:
        """Takes a snapshot (the new `current`) and returns it."""
        now = time.time()
        for alert in self.alerts.poll() if self.alerts is not None else ():
            kind = "retrain" if alert.get("signal") == "retrain" else str(alert.get("kind", "alert"))
            self._event(now, kind, alert.get("model_key"), _alert_text(alert))
        models = {}
        for key, served in sorted(self.service.live.all().items()):
            models[key] = self._model(key, served, now)
        self._seq += 1
        snapshot = {"seq": self._seq, "t": now, "models": models, "traffic": self.service.metrics.window(now),
                    "consumer_lag": self.lag.value if self.lag is not None else None,
                    "experiment": self._experiment(), "events": list(self.events), "counts": dict(self.counts)}
        self.history.append({k: v for k, v in snapshot.items() if k != "events"})
        self.current = snapshot
        return snapshot

    def _model(self, key: str, served, now: float) -> dict:
        version, scores = served.version, served.version.metrics or {}
        if self._seen_versions.get(key) != version.version:
            if key in self._seen_versions and "rollback_to" in scores:
                self._event(now, "rollback", key, f"{key} v{version.version}: rolled back to the state of "
                            f"v{scores['rollback_to']} ({scores.get('rollback_reason', 'no reason given')})")
            self._seen_versions[key] = version.version
        ctr, mean_p = scores.get("window_ctr"), scores.get("window_mean_p")
        return {"version": version.version, "step": version.step, "age_s": now - version.published_ms / 1000,
                "variant": self._variant_of(key),
                "labels": scores.get("window_labels", 0), "logloss": scores.get("window_logloss"),
                "rocauc": scores.get("window_rocauc"), "ctr": ctr,
                "calibration": mean_p / ctr if ctr and mean_p is not None else None,
                "label_delay_s": now - scores["label_ms"] / 1000 if "label_ms" in scores else None}

    def _variant_of(self, key: str) -> str | None:
        running = self.service.experiment
        if running is None:
            return None
        return next((name for name, v in running.config.variants.items() if v.model == key), None)

    def _experiment(self) -> dict | None:
        running = self.service.experiment
        if running is None:
            return None
        experiment, (state, version) = running.config, running.state
        return {"name": experiment.name, "kind": experiment.kind, "state": state.get("state", "running"),
                "stage": state.get("stage"), "state_version": version,
                "canary_weight": routing.canary_weight(experiment, state) if experiment.kind == "canary" else None}

    def _event(self, now: float, kind: str, model_key: str | None, text: str) -> None:
        self.counts[kind] += 1
        self.events.append({"id": sum(self.counts.values()), "t": now, "kind": kind, "model": model_key,
                            "text": text})


def _alert_text(alert: dict) -> str:
    what = f"{alert.get('signal', 'alert')} ({alert.get('kind')})"
    version = f", published v{alert['version']}" if alert.get("version") is not None else ""
    return f"{alert.get('model_key')}: {what}: {alert.get('reason')}{version}"


def finite(value) -> float:
    """A gauge's value: NaN for None."""
    return float("nan") if value is None else float(value)
