"""A canary ramp: the canary's share of users grows stage by stage (1% -> 5% -> 25% -> 50%,
then 100% through the registry's `promote`) and advances only when it is not worse with
confidence; it aborts the moment a guardrail says it is worse.

Each guardrail compares the canary's users with a baseline: control users of the same number
(Spinnaker's Kayenta compares a canary with a baseline of its own size, not with the whole
fleet, for the same reason: like against like, and the baseline's data is cheap to keep). A
guardrail is a user-level ratio metric where lower is better (log loss per impression, errors
per request) checked with an always-valid confidence sequence on the relative difference; or
a bound on the canary's own error rate (requests its model failed, and the control answered),
with confidence; or a latency bound (p99 over the canary's recent requests):

- *breach* (abort now): the canary is worse with confidence, its error rate is over bound with
  confidence, or its p99 latency is over bound;
- *pass* (may advance at the stage's end): worse by less than the stage's margin with
  confidence;
- otherwise the stage is extended; a stage still inconclusive after its extensions aborts,
  because an inconclusive canary never promotes.

Margins narrow as the ramp goes: 1% of users is cheap to expose and too few to tell 2% from 0%,
so the first stages only rule out large harm, and the last rules out small harm before 100%.

>>> ramp = Ramp((Stage(0.01, users=1000, margin=0.5), Stage(0.05, users=1000, margin=0.05)))
>>> canary = Canary(ramp, [RatioGuardrail("log_loss", tau2=1e-3)])
>>> canary.weight, canary.state
(0.01, 'ramping')
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from experiments import ratio, sequential

RAMPING, ABORTED, PROMOTED = "ramping", "aborted", "promoted"
BREACH, PASS, UNSURE = "breach", "pass", "unsure"


@dataclass(frozen=True)
class Stage:
    weight: float  # the canary's share of users
    users: int  # users enrolled (all variants) before the stage may end
    margin: float  # how much worse (relative) the canary may be, with confidence, to advance


DEFAULT_STAGES = (Stage(0.01, 60_000, 0.50), Stage(0.05, 40_000, 0.15),
                  Stage(0.25, 40_000, 0.06), Stage(0.50, 40_000, 0.05))


@dataclass(frozen=True)
class Ramp:
    stages: tuple[Stage, ...] = DEFAULT_STAGES
    max_extensions: int = 2  # extra stage lengths an inconclusive stage may take

    def __post_init__(self):
        weights = [s.weight for s in self.stages]
        if not weights or weights != sorted(set(weights)) or not 0 < weights[0] <= weights[-1] < 1:
            raise ValueError(f"stage weights must increase within (0, 1), got {weights}")


@dataclass(frozen=True)
class RatioGuardrail:
    """A lower-is-better ratio metric, compared on the relative difference canary / baseline - 1."""
    metric: str
    tau2: float  # mixing variance of the relative difference's confidence sequence
    alpha: float = 0.05
    min_users: int = 100  # canary users before the guardrail speaks

    def verdict(self, baseline: ratio.Moments, canary: ratio.Moments,
                margin: float) -> tuple[str, float, float]:
        """(breach, pass or unsure) and the confidence sequence of the relative difference."""
        if min(baseline.n, canary.n) < self.min_users:
            return UNSURE, -np.inf, np.inf
        base = float(baseline.ratio())
        estimate, variance = ratio.difference(baseline, canary)
        if not (base > 0 and variance > 0):
            return UNSURE, -np.inf, np.inf
        r = float(sequential.radius(variance, self.tau2 * base * base, self.alpha))
        low, high = (float(estimate) - r) / base, (float(estimate) + r) / base
        return (BREACH if low > 0 else PASS if high < margin else UNSURE), low, high


@dataclass(frozen=True)
class ErrorGuardrail:
    """The canary's error rate (per request, user-level) may not exceed `max_rate` with
    confidence: an always-valid lower bound over it breaches. Not relative to the baseline,
    whose rate is 0 in a healthy fleet.

    >>> ErrorGuardrail(0.01).verdict(ratio.Moments.of([5] * 30, [5] * 30))[0]  # every request failed
    'breach'
    >>> ErrorGuardrail(0.01).verdict(ratio.Moments.of([5] * 30, [0] * 30))[0]
    'pass'
    """
    max_rate: float = 0.01
    alpha: float = 0.05
    min_users: int = 20

    def verdict(self, requests: ratio.Moments) -> tuple[str, float]:
        """(breach or pass) and the error rate."""
        if requests.n < self.min_users or not requests.x:
            return UNSURE, float("nan")
        rate, variance = float(requests.ratio()), float(requests.variance())
        r = float(sequential.radius(variance, self.max_rate ** 2, self.alpha)) if variance > 0 else 0.0
        return (BREACH if rate - r > self.max_rate else PASS), rate


@dataclass(frozen=True)
class LatencyGuardrail:
    """The canary's p99 over its last `window` requests may not exceed `p99_ms`."""
    p99_ms: float
    window: int = 1000

    def verdict(self, latencies_ms) -> tuple[str, float]:
        recent = np.asarray(latencies_ms, float)[-self.window:]
        if len(recent) < min(self.window, 100):
            return UNSURE, float("nan")
        p99 = float(np.percentile(recent, 99))
        return (BREACH if p99 > self.p99_ms else PASS), p99


@dataclass
class Canary:
    """The ramp's state. `check` it with the users enrolled so far and each guardrail's data;
    it returns an event (a dict) when the state changes, and `weight` is the canary's share."""
    ramp: Ramp
    guardrails: list[RatioGuardrail]
    latency: LatencyGuardrail | None = None
    errors: ErrorGuardrail | None = None
    stage: int = 0
    stage_start: int = 0
    state: str = RAMPING
    events: list[dict] = field(default_factory=list)

    @property
    def weight(self) -> float:
        return {RAMPING: self.ramp.stages[self.stage].weight, ABORTED: 0.0, PROMOTED: 1.0}[self.state]

    def check(self, users: int, data: dict[str, tuple[ratio.Moments, ratio.Moments]],
              latencies_ms=(), requests: ratio.Moments | None = None) -> dict | None:
        """`requests`: the canary's users' requests and errors (for the error guardrail)."""
        if self.state != RAMPING:
            return None
        stage = self.ramp.stages[self.stage]
        verdicts = {g.metric: g.verdict(*data[g.metric], stage.margin) for g in self.guardrails}
        breached = [m for m, (v, *_) in verdicts.items() if v == BREACH]
        if self.latency is not None:
            verdict, p99 = self.latency.verdict(latencies_ms)
            if verdict == BREACH:
                breached.append(f"p99 latency {p99:.1f} ms > {self.latency.p99_ms} ms")
        if self.errors is not None and requests is not None:
            verdict, rate = self.errors.verdict(requests)
            if verdict == BREACH:
                breached.append(f"error rate {rate:.1%} > {self.errors.max_rate:.1%}")
        if breached:
            return self._end(ABORTED, users, f"guardrail breached: {', '.join(breached)}", verdicts)
        elapsed = users - self.stage_start
        if elapsed < stage.users:
            return None
        if all(v == PASS for v, *_ in verdicts.values()):
            if self.stage + 1 == len(self.ramp.stages):
                return self._end(PROMOTED, users, "not worse with confidence at every stage", verdicts)
            self.stage, self.stage_start = self.stage + 1, users
            return self._event("advanced", users, f"not worse with confidence: {self.weight:.0%}",
                               verdicts)
        if elapsed >= stage.users * (1 + self.ramp.max_extensions):
            return self._end(ABORTED, users, "inconclusive after every extension", verdicts)
        return None

    def _end(self, state: str, users: int, reason: str, verdicts) -> dict:
        self.state = state
        return self._event(state, users, reason, verdicts)

    def _event(self, kind: str, users: int, reason: str, verdicts) -> dict:
        event = {"event": kind, "users": users, "stage": self.stage, "weight": self.weight,
                 "reason": reason,
                 "guardrails": {m: {"verdict": v, "low": low, "high": high}
                                for m, (v, low, high) in verdicts.items()}}
        self.events.append(event)
        return event
