"""The A/B half of benchmarks.experiments: A/A false positives, power, coverage and novelty,
each over many simulated experiments that peek after every user."""
from __future__ import annotations

import numpy as np

from experiments import abtest, ratio, sequential, srm
from simulator.populations import Population, ab_test

BASE_CTR, LIFT = 0.05, 0.10


def paths(treated, x, y, skip: int = 0):
    """At each user enrolled: (users enrolled, estimate and variance of treatment minus
    control over the users after the first `skip`, sample-ratio p-value)."""
    analysed = np.arange(len(x)) >= skip
    control = ratio.Moments.running(x, y, ~treated & analysed)
    treatment = ratio.Moments.running(x, y, treated & analysed)
    estimate, variance = ratio.difference(control, treatment)
    counts = np.stack([np.cumsum(~treated), np.cumsum(treated)], axis=1)
    srm_p = np.minimum(1.0, np.exp(-srm.log_bayes_factor(counts, [0.5, 0.5])))
    return np.arange(1, len(x) + 1), estimate, variance, srm_p


def run(population: Population, plan: abtest.Plan, rng, runs: int, lift: float,
        novelty: float = 0.0, novelty_users: float = 1.0) -> dict:
    """Decisions of `runs` experiments, and whether each one's confidence sequence covered the
    true difference at every peek to the budget (whether or not it had stopped)."""
    rejected, shipped, users, covered, srm_stops = [], [], [], [], 0
    truth = BASE_CTR * lift
    for _ in range(runs):
        t, x, y = ab_test(population, rng, plan.max_users, lift, novelty=novelty,
                          novelty_users=novelty_users)
        n, estimate, variance, srm_p = paths(t, x, y, plan.burn_in_users)
        i, action = abtest.first_decision(plan, n, estimate, variance, srm_p)
        srm_stops += bool(srm_p[i] <= plan.srm_alpha)
        rejected.append(bool(sequential.p_value(estimate[i], variance[i], plan.tau2) <= plan.alpha))
        shipped.append(action == abtest.SHIP)
        users.append(n[i])
        peeks = n - plan.burn_in_users >= plan.min_users
        r = sequential.radius(variance[peeks], plan.tau2, plan.alpha)
        covered.append(bool(np.all(np.abs(estimate[peeks] - truth) <= r)))
    return {"rejection_rate": float(np.mean(rejected)), "ship_rate": float(np.mean(shipped)),
            "median_users": float(np.median(users)), "coverage": float(np.mean(covered)),
            "srm_stop_rate": srm_stops / runs}


def benchmark(rng, aa_runs: int, ab_runs: int, novelty_runs: int) -> dict:
    population = Population()
    user_variance = population.user_variance(rng)
    plan = abtest.Plan.for_effect(BASE_CTR, LIFT, user_variance)
    aa = run(population, plan, rng, aa_runs, lift=0.0)
    ab = run(population, plan, rng, ab_runs, lift=LIFT)
    novelty = {"novelty": 0.3, "novelty_users": 0.05 * plan.max_users, "lasting_lift": 0.0, "burn_in": 0.2}
    naive = run(population, plan, rng, novelty_runs, 0.0, novelty["novelty"], novelty["novelty_users"])
    burned = abtest.Plan.for_effect(BASE_CTR, LIFT, user_variance, burn_in=novelty["burn_in"])
    kept = run(population, burned, rng, novelty_runs, 0.0, novelty["novelty"], novelty["novelty_users"])
    return {
        "population": vars(population) | {"user_variance": user_variance},
        "plan": {"base_ctr": BASE_CTR, "relative_lift": LIFT, "power": 0.8, "alpha": plan.alpha,
                 "fixed_horizon_users": plan.fixed_horizon_users, "max_users": plan.max_users,
                 "min_users": plan.min_users, "tau2": plan.tau2, "peeks": "after every user"},
        "aa_false_positive_rate": aa["rejection_rate"], "aa_runs": aa_runs,
        "aa_srm_false_alarm_rate": aa["srm_stop_rate"],
        "ab_power": ab["ship_rate"], "ab_runs": ab_runs,
        "ab_median_sample_ratio": ab["median_users"] / plan.fixed_horizon_users,
        "cs_coverage": min(aa["coverage"], ab["coverage"]),
        "cs_coverage_aa": aa["coverage"], "cs_coverage_ab": ab["coverage"],
        "novelty": novelty | {"runs": novelty_runs, "ship_rate_analysed_from_start": naive["ship_rate"],
                              "ship_rate_after_burn_in": kept["ship_rate"]},
    }
