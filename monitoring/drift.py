"""Drift detection on a model's labelled predictions, with river's detectors.

Three signals of each labelled prediction (label `y`, served probability `p`, features `x`):

- `log_loss`: the prediction's log loss. Quality decays when it rises (a one-sided test).
- `residual`: `y - p`. The label rate leaves the predicted mean either way (calibration).
- `feature:NAME`: a key feature's value. The inputs move either way.

Each signal has one of river's detectors. The defaults (`TUNED`) were chosen by
`benchmarks.drift` on simulated streams of other seeds than those it scores them on: the
fastest detection of a 5% -> 6% CTR shift subject to no false alarm on millions of
stationary events. river's own defaults, on the same streams, raise false alarms every few
thousand events (the benchmark's table).

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
from river.drift import binary

EPS = 1e-6
DETECTORS = {"PageHinkley": drift.PageHinkley, "ADWIN": drift.ADWIN, "KSWIN": drift.KSWIN,
             "HDDM_A": binary.HDDMA, "HDDM_W": binary.HDDMW, "DDM": binary.DDM, "EDDM": binary.EDDM,
             "FHDDM": binary.FHDDM}


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
TUNED = {
    "log_loss": Spec("PageHinkley", {"mode": "up", "delta": 0.015, "threshold": 100.0, "alpha": 1.0,
                                      "min_instances": 1000}),
    "residual": Spec("PageHinkley", {"mode": "both", "delta": 0.004, "threshold": 50.0, "alpha": 1.0,
                                      "min_instances": 1000}),
}
FEATURE = Spec("ADWIN", {"delta": 1e-7})  # each key feature's


@dataclasses.dataclass(frozen=True)
class Alarm:
    signal: str  # log_loss, residual or feature:NAME
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


def signal_value(signal: str, y: bool, p: float, x: dict | None) -> float | None:
    if signal == "log_loss":
        q = min(max(p, EPS), 1 - EPS)
        return -math.log(q if y else 1 - q)
    if signal == "residual":
        return float(y) - p
    if signal == "label":
        return float(y)
    name = signal.split(":", 1)[1]
    return None if x is None or x.get(name) is None else float(x[name])
