"""Drift detection on a model's labelled predictions: a likelihood-ratio CUSUM and river's detectors.

Signals of each labelled prediction (label `y`, served probability `p`, features `x`):

- `calibration`: the pair `(y, p)`, for `BernoulliCUSUM`: the label rate leaves the predicted
  probabilities, either way.
- `log_loss`: the prediction's log loss, for a one-sided test: quality decays when it rises.
- `residual`: `y - p`, river's detectors' view of calibration.
- `feature:NAME`: a key feature's value. The inputs move either way.

The defaults (`TUNED`, `FEATURE`) were chosen by `benchmarks.drift` on simulated streams of
other seeds than those it scores them on: the CUSUM's threshold from Siegmund's approximation,
fitted to the false alarms it raised on 6 million stationary events, for half a false alarm
per million; the feature's ADWIN, the fastest to find a feature shift among those with no false
alarm there. `log_loss` and `residual` are not in `TUNED`: the CUSUM finds a CTR shift sooner
than river's PageHinkley on either, with fewer false alarms. river's own defaults, on the same
streams, raise false alarms every few thousand events (the benchmark's table).

>>> import random
>>> rng, monitor = random.Random(1), Monitor()
>>> for i in range(100_000):  # a 5% CTR, predicted well, then 10% from event 50,000 on
...     alarms = monitor.update(rng.random() < (0.05 if i < 50_000 else 0.10), 0.05)
...     if alarms:
...         break
>>> [a.at > 50_000 for a in alarms]
[True]
"""
from __future__ import annotations

import dataclasses
import math

from river import drift
from river.base import DriftDetector
from river.drift import binary

EPS = 1e-6


class BernoulliCUSUM(DriftDetector):
    """Page's CUSUM of the Bernoulli likelihood ratio of labels against their predicted
    probabilities: each update is a labelled prediction `(y, p)`.

    Up: the sum of log P(y | q) / P(y | p), q = p * `ratio` (clipped below 1), floored at 0;
    down: the same with q = p / `ratio`. A drift when either exceeds `threshold` (nats); then
    both start afresh. Against the predictions themselves, not a running mean: a change cannot
    hide in the mean it moves, and nothing needs to warm up.

    `threshold`: each side raises a false alarm about every (e^h - h - 1) / I events
    (Siegmund's approximation), I the information per event against the change (about
    0.001 nats for a ratio of 1.2 about a 5% rate), and finds a change of `ratio` after about
    (h - 1) / I' (I' the information per event for it, about the same).
    `mode`: "up", "down" or "both". The defaults are `TUNED`'s.

    >>> import random
    >>> rng, cusum = random.Random(42), BernoulliCUSUM()
    >>> for i in range(100_000):  # predicted 5%; labels at 5%, then 7.5% from event 50,000 on
    ...     cusum.update((rng.random() < (0.05 if i < 50_000 else 0.075), 0.05))
    ...     if cusum.drift_detected:
    ...         print(f"Change detected at event {i:,}")
    ...         break
    Change detected at event 51,979
    """

    def __init__(self, ratio: float = 1.2, threshold: float = 8.31, mode: str = "both"):
        super().__init__()
        if ratio <= 1 or threshold <= 0 or mode not in ("up", "down", "both"):
            raise ValueError(f"need ratio > 1, threshold > 0, mode up, down or both (got {ratio}, {threshold}, {mode})")
        self.ratio, self.threshold, self.mode = ratio, threshold, mode
        self._sides = [r for r, side in ((ratio, "up"), (1 / ratio, "down")) if mode in (side, "both")]
        self._reset()

    def _reset(self):
        super()._reset()
        self.statistic = [0.0] * len(self._sides)

    def update(self, x):
        """x: (y, p), a label and its predicted probability."""
        if self.drift_detected:
            self._reset()
        y, p = x
        p = min(max(p, EPS), 1 - EPS)
        for i, r in enumerate(self._sides):
            q = min(p * r, 1 - EPS)
            self.statistic[i] = max(0.0, self.statistic[i] + math.log(q / p if y else (1 - q) / (1 - p)))
        self._drift_detected = max(self.statistic) > self.threshold


DETECTORS = {"BernoulliCUSUM": BernoulliCUSUM, "PageHinkley": drift.PageHinkley, "ADWIN": drift.ADWIN,
             "KSWIN": drift.KSWIN, "HDDM_A": binary.HDDMA, "HDDM_W": binary.HDDMW, "DDM": binary.DDM,
             "EDDM": binary.EDDM, "FHDDM": binary.FHDDM}


@dataclasses.dataclass(frozen=True)
class Spec:
    """A river detector by class name and parameters; `make()` builds a fresh one."""
    detector: str
    params: dict = dataclasses.field(default_factory=dict)

    def make(self):
        return DETECTORS[self.detector](**self.params)

    def __str__(self) -> str:
        return f"{self.detector}({', '.join(f'{k}={v}' for k, v in sorted(self.params.items()))})"


# From `python -m benchmarks.drift` (docs/bench/drift-*.json): see the README's drift table.
TUNED = {"calibration": Spec("BernoulliCUSUM", {"ratio": 1.2, "threshold": 8.31})}
FEATURE = Spec("ADWIN", {"delta": 1e-5})  # each key feature's
# A loss of discrimination that keeps the mean (the simulator's taste drift can be one) moves the
# log loss, not the calibration: the guard watches it too, with the PageHinkley tuned before the
# CUSUM (its false alarms: the README's drift table, "PageHinkley (tuned before)").
LOG_LOSS = Spec("PageHinkley", {"mode": "up", "delta": 0.015, "threshold": 100.0, "alpha": 1.0,
                                "min_instances": 1000})


@dataclasses.dataclass(frozen=True)
class Alarm:
    signal: str  # calibration, log_loss, residual or feature:NAME
    detector: str  # the detector, with its parameters
    at: int  # the events the monitor had seen when it fired (this one included)


class Monitor:
    """Detectors over the signals of a stream of labelled predictions. After an alarm, the
    detector starts afresh (river's detectors reset themselves), so one change gives one alarm.

    `features`: the key features to watch, each with `FEATURE` (a missing value is skipped).
    """

    def __init__(self, signals: dict[str, Spec] | None = None, features=()):
        self.specs = dict(TUNED if signals is None else signals)
        self.specs.update({f"feature:{name}": FEATURE for name in features})
        self.detectors = {signal: spec.make() for signal, spec in self.specs.items()}
        self.seen = 0
        self.alarms: list[Alarm] = []

    def update(self, y: bool, p: float, x: dict | None = None) -> list[Alarm]:
        """One labelled prediction; the alarms it raised."""
        self.seen += 1
        fired = []
        for signal, detector in self.detectors.items():
            value = signal_value(signal, y, p, x)
            if value is None:
                continue
            detector.update(value)
            if detector.drift_detected:
                fired.append(Alarm(signal, str(self.specs[signal]), self.seen))
        self.alarms += fired
        return fired


def signal_value(signal: str, y: bool, p: float, x: dict | None) -> float | tuple | None:
    if signal == "calibration":
        return bool(y), p
    if signal == "log_loss":
        q = min(max(p, EPS), 1 - EPS)
        return -math.log(q if y else 1 - q)
    if signal == "residual":
        return float(y) - p
    if signal == "label":
        return float(y)
    name = signal.split(":", 1)[1]
    return None if x is None or x.get(name) is None else float(x[name])
