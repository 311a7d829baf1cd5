"""A/B decisions on a user-level ratio metric, checked continuously: `continue`, `ship` or
`stop`, with the effect and its confidence sequence, and a sample-ratio check first.

A plan states the smallest lift worth finding and the budget; the mixing variance of the
sequential test is tuned to be tightest at the budget. Users enrolled during the burn-in are
not analysed: a new variant's novelty (its CTR starts high and decays) would otherwise lift the
estimate long after it has worn off, and an always-valid test would eventually ship it.

>>> plan = Plan.for_effect(base_ratio=0.05, relative_lift=0.10, user_variance=0.04)
>>> plan.fixed_horizon_users, plan.max_users
(50233, 100466)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from experiments import ratio, sequential, srm

CONTINUE, SHIP, STOP = "continue", "ship", "stop"


@dataclass(frozen=True)
class Plan:
    """How an A/B test decides. Users count over both variants."""
    tau2: float  # the mixing variance of the always-valid test, in the metric's units squared
    max_users: int  # the budget: past it, an inconclusive test stops
    burn_in_users: int = 0  # users enrolled first, not analysed (novelty)
    min_users: int = 1000  # users analysed before any decision (the normal approximation)
    alpha: float = 0.05
    srm_alpha: float = 0.001
    treatment_weight: float = 0.5
    fixed_horizon_users: int = 0  # what a fixed-horizon test at this power would need

    @classmethod
    def for_effect(cls, base_ratio: float, relative_lift: float, user_variance: float,
                   power: float = 0.8, alpha: float = 0.05, budget: float = 2.0,
                   burn_in: float = 0.0, treatment_weight: float = 0.5) -> Plan:
        """The plan to find `relative_lift` on `base_ratio`, where `user_variance` is n times
        the delta-method variance of one group's ratio over n users: the budget is `budget`
        times the fixed-horizon sample size, the burn-in a share of the budget."""
        effect = base_ratio * relative_lift
        z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
        weights = 1 / treatment_weight + 1 / (1 - treatment_weight)
        fixed = int(np.ceil(z * z * user_variance * weights / effect ** 2))
        max_users = int(budget * fixed)
        planned = user_variance * weights / (max_users * (1 - burn_in))
        return cls(sequential.mixing_variance(planned, alpha), max_users,
                   int(burn_in * max_users), alpha=alpha, treatment_weight=treatment_weight,
                   fixed_horizon_users=fixed)


def first_decision(plan: Plan, users, estimate, variance, srm_p=None) -> tuple[int, str]:
    """The first peek at which the plan decides, and the decision, along a sequence of peeks
    (arrays: users enrolled so far, estimate and variance over the users analysed, and the
    sample-ratio p-value). (-1, "continue") if it never does."""
    users = np.asarray(users)
    p = sequential.p_value(estimate, variance, plan.tau2)
    analysed = users - plan.burn_in_users
    significant = (analysed >= plan.min_users) & (p <= plan.alpha) & np.isfinite(estimate)
    mismatch = np.zeros_like(significant) if srm_p is None else np.asarray(srm_p) <= plan.srm_alpha
    spent = users >= plan.max_users
    any_stop = significant | mismatch | spent
    if not any_stop.any():
        return -1, CONTINUE
    i = int(np.argmax(any_stop))
    if mismatch[i] or not significant[i]:
        return i, STOP
    return i, SHIP if np.asarray(estimate)[i] > 0 else STOP


@dataclass
class Decision:
    action: str
    reason: str
    users: dict[str, int]
    estimate: float  # treatment minus control
    low: float
    high: float
    p_value: float
    lift: float  # relative
    lift_low: float
    lift_high: float
    srm_p: float


@dataclass
class ABTest:
    """One A/B test's running state: `check` it with each variant's moments (the users
    enrolled after the burn-in) and the users enrolled per variant."""
    plan: Plan
    history: list[Decision] = field(default_factory=list)

    def __post_init__(self):
        self._difference = sequential.ConfidenceSequence(self.plan.alpha, self.plan.tau2)
        self._srm_p = 1.0
        self.decision: Decision | None = None

    def check(self, control: ratio.Moments, treatment: ratio.Moments,
              enrolled: tuple[int, int]) -> Decision:
        if self.decision is not None and self.decision.action != CONTINUE:
            return self.decision  # a decision, once made, stands
        estimate, variance = ratio.difference(control, treatment)
        self._difference.update(float(estimate), float(variance))
        weights = (1 - self.plan.treatment_weight, self.plan.treatment_weight)
        self._srm_p = min(self._srm_p, srm.sequential_p(enrolled, weights))
        users = sum(enrolled)
        i, action = first_decision(self.plan, [users], [estimate], [variance], [self._srm_p])
        significant = bool(sequential.p_value(estimate, variance, self.plan.tau2) <= self.plan.alpha)
        reason = _reason(self.plan, action, users, self._srm_p, significant)
        cs, base = self._difference, float(control.ratio())
        # The lift's interval treats control's ratio as known: its error is the smaller term.
        self.decision = Decision(action, reason, {"control": enrolled[0], "treatment": enrolled[1]},
                                 cs.estimate, cs.low, cs.high, cs.p_value, cs.estimate / base,
                                 cs.low / base, cs.high / base, self._srm_p)
        self.history.append(self.decision)
        return self.decision


def _reason(plan: Plan, action: str, users: int, srm_p: float, significant: bool) -> str:
    if action == CONTINUE:
        return "burn-in" if users < plan.burn_in_users + plan.min_users else "not significant yet"
    if srm_p <= plan.srm_alpha:
        return f"sample ratio mismatch (always-valid p = {srm_p:.2g}): the data cannot be trusted"
    if action == SHIP:
        return "the treatment is better with confidence"
    if significant:
        return "the treatment is worse with confidence"
    return f"inconclusive at the budget of {plan.max_users} users"
