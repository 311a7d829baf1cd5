"""The one owner of an experiment's routing state: it keeps a ledger of labelled impressions
per variant and user, checks the experiment's statistics, and writes the state the serving
replicas route by (stage and weight, probabilities, decision) and the events, to the
experiments store.

- ab: `abtest.ABTest` on user-level CTR; a decision (`ship` the treatment, `stop` on control)
  routes everyone to the variant chosen. The plan's user variance is estimated once, from the
  first `min_users` users, and then fixed: the test's mixing variance must not follow the data.
- canary: `canary.Canary` on log loss of the served probability against the label, canary users
  against a baseline of control users of the same share (buckets from 5,000 up), and on the
  canary's error rate and p99 latency as served (read off each request's first impression as
  it arrives, without waiting for labels: a breach there aborts within a check); a finished
  ramp is promoted.
- bandit: Thompson sampling's posteriors from the labels; the probabilities of each choice.
- shadow: no routing to decide; the ledger compares the variants.
"""
from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np

from experiments import abtest, canary, ratio, sequential
from experiments.assignment import BUCKETS
from experiments.bandit import ThompsonRouter
from experiments.config import Experiment
from experiments.routing import canary_weight

EPS = 1e-6
LATENCY_WINDOW = 1000  # a variant's latest answers its p99 is of


@dataclasses.dataclass
class UserTotals:
    bucket: int
    impressions: int = 0
    clicks: int = 0
    log_loss: float = 0.0
    paired: int = 0  # impressions the shadow scored too
    paired_difference: float = 0.0  # the shadow's log loss minus control's, summed over them
    shadow_matches: int = 0  # impressions of the item the shadow would have shown in that slot
    shadow_clicks_ips: float = 0.0  # their clicks over the propensity the item was shown with
    clicks_over_probability: float = 0.0  # clicks over the probability the variant was chosen with


class Ledger:
    """Labelled impressions summed per variant and user."""

    def __init__(self):
        self.variants: dict[str, dict[str, UserTotals]] = {}
        self.requests: dict[str, dict[str, list[int]]] = {}  # variant -> user -> [requests, errors]
        self.latencies: dict[str, collections.deque] = {}  # variant -> its latest answers' serve_ms

    def served(self, impression: dict) -> None:
        """A routed impression as read, before its label: the first of each request (the one
        with `serve_ms`) counts the request, its error and its time to answer."""
        if impression.get("serve_ms") is None:
            return
        variant = impression["variant"]
        counts = self.requests.setdefault(variant, {}).setdefault(impression["user_id"], [0, 0])
        counts[0] += 1
        counts[1] += impression.get("error") is not None
        self.latencies.setdefault(variant, collections.deque(maxlen=LATENCY_WINDOW)).append(impression["serve_ms"])

    def request_moments(self, variant: str) -> ratio.Moments:
        """User-level moments of errors per request."""
        users = list(self.requests.get(variant, {}).values())
        return ratio.Moments.of([u[0] for u in users], [u[1] for u in users])

    def add(self, labelled: dict, shadow: dict | None = None) -> None:
        """A labelled impression, and the shadow's prediction of it if one was logged. One the
        variant failed to answer (the control's model answered) is no evidence of the variant's
        predictions: its errors are counted by `served`."""
        if labelled.get("error") is not None:
            return
        users = self.variants.setdefault(labelled["variant"], {})
        totals = users.get(labelled["user_id"]) or users.setdefault(labelled["user_id"], UserTotals(labelled["bucket"]))
        loss = _log_loss(labelled.get("served_probability"), labelled["clicked"])
        totals.impressions += 1
        totals.clicks += bool(labelled["clicked"])
        totals.log_loss += loss
        if labelled.get("assignment_probability"):
            totals.clicks_over_probability += bool(labelled["clicked"]) / labelled["assignment_probability"]
        if shadow is not None and shadow.get("probability") is not None:
            totals.paired += 1
            totals.paired_difference += _log_loss(shadow["probability"], labelled["clicked"]) - loss
        if shadow is not None and shadow.get("shadow_item") == labelled["item_id"] and labelled.get("propensity"):
            totals.shadow_matches += 1
            totals.shadow_clicks_ips += bool(labelled["clicked"]) / labelled["propensity"]

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
        for variant, users in sorted(self.requests.items()):
            requests, errors = sum(u[0] for u in users.values()), sum(u[1] for u in users.values())
            out.setdefault(variant, {}).update(
                requests=requests, errors=errors, error_rate=errors / requests if requests else None,
                p99_ms=float(np.percentile(self.latencies[variant], 99)) if self.latencies.get(variant) else None)
        return out


def _log_loss(probability, clicked) -> float:
    p = min(max(probability if probability is not None else 0.5, EPS), 1 - EPS)
    return -math.log(p if clicked else 1 - p)


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
            errors = canary.ErrorGuardrail(g.get("max_error_rate", 0.01))
            self._canary = canary.Canary(experiment.ramp, [log_loss],
                                         latency, errors, stage=int(self.state.get("stage", 0)),
                                         stage_start=int(self.state.get("stage_start", 0)),
                                         state=self.state.get("state", canary.RAMPING))

    def check(self, ledger: Ledger) -> tuple[dict, list[dict]]:
        kind = self.experiment.kind
        events = (self._check_ab(ledger) if kind == "ab" else self._check_canary(ledger)
                  if kind == "canary" else self._check_bandit(ledger) if kind == "bandit" else self._check_shadow(ledger))
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

    def _check_canary(self, ledger: Ledger) -> list[dict]:
        e, run = self.experiment, self._canary
        w, treatment = canary_weight(e, self.state), e.treatment()
        baseline = ledger.moments(e.control, "log_loss", (BUCKETS // 2, BUCKETS // 2 + round(w * BUCKETS)))
        event = run.check(ledger.users(), {"log_loss": (baseline, ledger.moments(treatment, "log_loss"))},
                          ledger.latencies.get(treatment, ()), ledger.request_moments(treatment))
        self.state.update(stage=run.stage, stage_start=run.stage_start, state=run.state, weight=run.weight)
        return [event] if event else []

    def _check_shadow(self, ledger: Ledger) -> list[dict]:
        """The shadow against control on control's impressions, pairwise: the mean difference in
        log loss with its confidence sequence; and its own ranking's CTR by inverse propensity
        (the control's exploration showed the shadow's item in its slot now and then)."""
        users = list(ledger.variants.get(self.experiment.control, {}).values())
        paired = ratio.Moments.of([u.paired for u in users], [u.paired_difference for u in users])
        impressions = sum(u.impressions for u in users)
        base = sum(u.log_loss for u in users) / impressions if impressions else 0.0
        estimate, variance = float(paired.ratio()) if paired.x else float("nan"), float(paired.variance())
        tau2 = self.experiment.guardrails.get("tau2", 0.005) * base * base  # relative, as the guardrails'
        r = float(sequential.radius(variance, tau2, 0.05)) if variance > 0 and tau2 > 0 else float("inf")
        self.state["shadow"] = {
            "paired_impressions": int(paired.x), "log_loss_control": base, "log_loss_difference": estimate,
            "low": estimate - r,
            "high": estimate + r, "matches": sum(u.shadow_matches for u in users),
            "ips_ctr": sum(u.shadow_clicks_ips for u in users) / impressions if impressions else None}
        return []

    def _check_bandit(self, ledger: Ledger) -> list[dict]:
        router = ThompsonRouter(list(self.experiment.variants), floor=self.experiment.floor)
        for variant, users in ledger.variants.items():
            if variant in router.posteriors:
                router.update_many(variant, sum(u.clicks for u in users.values()),
                                   sum(u.impressions for u in users.values()))
        self.state["probabilities"] = router.probabilities()
        self.state["off_policy"] = off_policy(ledger, list(self.experiment.variants))
        return []


def off_policy(ledger: Ledger, variants: list[str]) -> dict:
    """Inverse-propensity estimates of the CTR that other policies would have had, from the
    logged choice probabilities: uniform over the variants, and always each one."""
    n = sum(u.impressions for users in ledger.variants.values() for u in users.values())
    weighted = {v: sum(u.clicks_over_probability for u in ledger.variants.get(v, {}).values()) for v in variants}
    if not n:
        return {}
    return {"uniform": sum(weighted.values()) / len(variants) / n,
            **{f"always {v}": weighted[v] / n for v in variants}}

