"""The one owner of an experiment's routing state: it keeps a ledger of labelled impressions
per variant and user, checks the experiment's statistics, and writes the state the serving
replicas route by (stage and weight, probabilities, decision) and the events, to the
experiments store.

- ab: `abtest.ABTest` on user-level CTR; a decision (`ship` the treatment, `stop` on control)
  routes everyone to the variant chosen. The plan's user variance is estimated once, from the
  first `min_users` users, and then fixed: the test's mixing variance must not follow the data.
- canary: `canary.Canary` on log loss of the served probability against the label, canary users
  against a baseline of control users of the same share (buckets from 5,000 up); a finished
  ramp is promoted, and `on_promote` (the registry's `promote`) is called.
- bandit: Thompson sampling's posteriors from the labels; the probabilities of each choice.
- shadow: no routing to decide; the ledger compares the variants.
"""
from __future__ import annotations

import dataclasses
import math

from experiments import abtest, canary, ratio
from experiments.assignment import BUCKETS
from experiments.bandit import ThompsonRouter
from experiments.config import Experiment
from experiments.routing import canary_weight

EPS = 1e-6


@dataclasses.dataclass
class UserTotals:
    bucket: int
    impressions: int = 0
    clicks: int = 0
    log_loss: float = 0.0


class Ledger:
    """Labelled impressions summed per variant and user."""

    def __init__(self):
        self.variants: dict[str, dict[str, UserTotals]] = {}

    def add(self, labelled: dict) -> None:
        users = self.variants.setdefault(labelled["variant"], {})
        totals = users.get(labelled["user_id"]) or users.setdefault(labelled["user_id"], UserTotals(labelled["bucket"]))
        p = min(max(labelled.get("served_probability") or 0.5, EPS), 1 - EPS)
        totals.impressions += 1
        totals.clicks += bool(labelled["clicked"])
        totals.log_loss += -math.log(p if labelled["clicked"] else 1 - p)

    def moments(self, variant: str, metric: str = "clicks", buckets: tuple[int, int] | None = None) -> ratio.Moments:
        """The user-level moments of `metric` per impression, of the variant's users (in `buckets`)."""
        users = [u for u in self.variants.get(variant, {}).values()
                 if buckets is None or buckets[0] <= u.bucket < buckets[1]]
        return ratio.Moments.of([u.impressions for u in users], [getattr(u, metric) for u in users])

    def users(self, variant: str | None = None) -> int:
        if variant is not None:
            return len(self.variants.get(variant, {}))
        return sum(len(users) for users in self.variants.values())

    def summary(self) -> dict:
        out = {}
        for variant, users in sorted(self.variants.items()):
            n = sum(u.impressions for u in users.values())
            out[variant] = {"users": len(users), "impressions": n, "clicks": sum(u.clicks for u in users.values()),
                            "ctr": sum(u.clicks for u in users.values()) / n if n else None,
                            "log_loss": sum(u.log_loss for u in users.values()) / n if n else None}
        return out


class Owner:
    """Checks an experiment and says what its routing state becomes; `check` returns the new
    state (a dict to write) and the events since the last check."""

    def __init__(self, experiment: Experiment, state: dict | None = None):
        self.experiment, self.state = experiment, dict(state or {})
        self._ab: abtest.ABTest | None = None
        self._canary = None
        if experiment.kind == "canary":
            g = experiment.guardrails
            latency = canary.LatencyGuardrail(g["p99_latency_ms"]) if g.get("p99_latency_ms") else None
            log_loss = canary.RatioGuardrail("log_loss", tau2=g.get("tau2", 0.005), min_users=g.get("min_users", 100))
            self._canary = canary.Canary(experiment.ramp, [log_loss],
                                         latency, stage=int(self.state.get("stage", 0)),
                                         stage_start=int(self.state.get("stage_start", 0)),
                                         state=self.state.get("state", canary.RAMPING))
        self._bandit = ThompsonRouter(list(experiment.variants), floor=experiment.floor) \
            if experiment.kind == "bandit" else None

    def check(self, ledger: Ledger, latencies_ms=()) -> tuple[dict, list[dict]]:
        kind = self.experiment.kind
        events = (self._check_ab(ledger) if kind == "ab" else self._check_canary(ledger, latencies_ms)
                  if kind == "canary" else self._check_bandit(ledger) if kind == "bandit" else [])
        self.state["summary"] = ledger.summary()
        return dict(self.state), events

    def _check_ab(self, ledger: Ledger) -> list[dict]:
        e = self.experiment
        control, treatment = e.control, next(v for v in e.variants if v != e.control)
        if self._ab is None:
            pooled = ledger.moments(control) + ledger.moments(treatment)
            if pooled.n < e.plan["min_users"]:
                return []
            user_variance = float(pooled.variance()) * pooled.n
            plan = abtest.Plan.for_effect(
                e.plan["base_ctr"], e.plan["relative_lift"], user_variance, power=e.plan["power"],
                alpha=e.plan["alpha"], budget=e.plan["budget"], burn_in=e.plan["burn_in"],
                treatment_weight=e.weights[treatment])
            self._ab = abtest.ABTest(dataclasses.replace(plan, min_users=int(e.plan["min_users"])))
        decision = self._ab.check(ledger.moments(control), ledger.moments(treatment),
                                  (ledger.users(control), ledger.users(treatment)))
        self.state["test"] = dataclasses.asdict(decision) | {"max_users": self._ab.plan.max_users}
        if decision.action == abtest.CONTINUE or "decision" in self.state:
            return []
        chosen = treatment if decision.action == abtest.SHIP else control
        self.state["decision"] = {"action": decision.action, "variant": chosen, "reason": decision.reason}
        return [{"event": decision.action, "variant": chosen, "reason": decision.reason, "lift": decision.lift,
                 "lift_low": decision.lift_low, "lift_high": decision.lift_high}]

    def _check_canary(self, ledger: Ledger, latencies_ms) -> list[dict]:
        e, run = self.experiment, self._canary
        w = canary_weight(e, self.state)
        baseline = ledger.moments(e.control, "log_loss", (BUCKETS // 2, BUCKETS // 2 + round(w * BUCKETS)))
        event = run.check(ledger.users(), {"log_loss": (baseline, ledger.moments(e.treatment(), "log_loss"))},
                          latencies_ms)
        self.state.update(stage=run.stage, stage_start=run.stage_start, state=run.state, weight=run.weight)
        return [event] if event else []

    def _check_bandit(self, ledger: Ledger) -> list[dict]:
        router = ThompsonRouter(list(self.experiment.variants), floor=self.experiment.floor)
        for variant, users in ledger.variants.items():
            if variant in router.posteriors:
                router.update_many(variant, sum(u.clicks for u in users.values()),
                                   sum(u.impressions for u in users.values()))
        self._bandit = router
        self.state["probabilities"] = router.probabilities()
        return []

