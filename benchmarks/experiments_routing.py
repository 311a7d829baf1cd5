"""The routing half of benchmarks.experiments: canary ramps of a clearly worse and of a good
model, and a Thompson-sampling bandit with off-policy estimates from its logs."""
from __future__ import annotations

import numpy as np

from experiments import canary, offpolicy, ratio, sequential
from experiments.bandit import ThompsonRouter
from simulator.populations import Population, model_traffic, noise_for_log_loss

PEEK_USERS = 500  # users enrolled between two checks of the guardrails
ARMS = (0.04, 0.05, 0.06)


def ramp_once(population, rng, guardrail, ramp, canary_noise: float) -> canary.Canary:
    """One ramp. Users enrol in order; a user's uniform bucket puts them in the canary (below
    the canary's weight) or in the baseline (the same share of control, from 0.5 up), and the
    canary model or the calibrated control model serves them."""
    run = canary.Canary(ramp, [guardrail])
    most = sum(s.users for s in ramp.stages) * (1 + ramp.max_extensions)
    u = rng.random(most)
    treated = model_traffic(population, rng, most, canary_noise)
    control = model_traffic(population, rng, most, 0.0)
    sums = {"canary": np.zeros(6), "baseline": np.zeros(6)}
    for start in range(0, most, PEEK_USERS):
        block = slice(start, start + PEEK_USERS)
        w = run.weight
        for name, (x, _, loss), mask in (("canary", treated, u[block] < w),
                                         ("baseline", control, (u[block] >= 0.5) & (u[block] < 0.5 + w))):
            xs, ls = x[block][mask].astype(float), loss[block][mask]
            sums[name] += [len(xs), xs.sum(), ls.sum(), xs @ xs, ls @ ls, xs @ ls]
        moments = (ratio.Moments(*sums["baseline"]), ratio.Moments(*sums["canary"]))
        run.check(start + PEEK_USERS, {"log_loss": moments})
        if run.state != canary.RAMPING:
            break
    return run


def canaries(rng, runs: int) -> dict:
    population = Population()
    bad_noise = noise_for_log_loss(population, 1.2)
    # The confidence sequence is tightest at the relative variance of 10,000 users a side.
    x, y, loss = model_traffic(population, rng, 200_000, 0.0)
    m = ratio.Moments.of(x, loss)
    relative_variance = 2 * float(m.variance()) * 200_000 / 10_000 / float(m.ratio()) ** 2
    guardrail = canary.RatioGuardrail("log_loss", tau2=sequential.mixing_variance(relative_variance, 0.05))
    ramp = canary.Ramp()
    bad = [ramp_once(population, rng, guardrail, ramp, bad_noise) for _ in range(runs)]
    good = [ramp_once(population, rng, guardrail, ramp, 0.0) for _ in range(runs)]
    before_25 = [r.state == canary.ABORTED and r.ramp.stages[r.stage].weight < 0.25 for r in bad]
    return {
        "canary_bad_caught_rate": float(np.mean(before_25)),
        "canary_good_abort_rate": float(np.mean([r.state == canary.ABORTED for r in good])),
        "canary_good_promoted_rate": float(np.mean([r.state == canary.PROMOTED for r in good])),
        "canary": {"runs": runs, "bad_log_loss_factor": 1.2, "bad_noise_logit_sd": bad_noise,
                   "stages": [vars(s) for s in ramp.stages], "max_extensions": ramp.max_extensions,
                   "peek_users": PEEK_USERS, "tau2_relative": guardrail.tau2,
                   "bad_abort_reasons": _reasons(bad), "good_end_reasons": _reasons(good),
                   "bad_median_users_at_abort": float(np.median([r.events[-1]["users"] for r in bad]))},
    }


def _reasons(runs) -> dict:
    counts: dict[str, int] = {}
    for r in runs:
        key = f"{r.state} at {r.ramp.stages[r.stage].weight:.0%}: {r.events[-1]['reason'] if r.events else ''}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def bandit_once(rng, impressions: int, delay: int, seed: int):
    """One bandit run over ARMS: decisions in blocks of `delay` impressions, whose clicks
    update the posteriors when the block ends (the delayed label)."""
    router = ThompsonRouter([str(p) for p in ARMS], seed=seed)
    actions, propensities, rewards = [], [], []
    for _ in range(impressions // delay):
        probabilities = np.array(list(router.probabilities().values()))
        chosen = router.choose_many(delay, rng)
        clicked = rng.random(delay) < np.asarray(ARMS)[chosen]
        for k, arm in enumerate(router.arms):
            router.update_many(arm, int(clicked[chosen == k].sum()), int((chosen == k).sum()))
        actions.append(chosen), propensities.append(probabilities[chosen]), rewards.append(clicked)
    return np.concatenate(actions), np.concatenate(propensities), np.concatenate(rewards)


def bandits(rng, runs: int, impressions: int = 100_000, delay: int = 1_000) -> dict:
    best, uniform, always_best = int(np.argmax(ARMS)), np.full(len(ARMS), 1 / len(ARMS)), np.eye(len(ARMS))[int(np.argmax(ARMS))]
    truths = {"uniform": float(uniform @ ARMS), "always_best": max(ARMS)}
    shares, regrets, errors = [], [], {k: {e: [] for e in ("ips", "snips", "doubly_robust")} for k in truths}
    for seed in range(runs):
        a, p, r = bandit_once(rng, impressions, delay, seed)
        shares.append(float(np.mean(a[-10_000:] == best)))
        regrets.append(float(np.sum(max(ARMS) - np.asarray(ARMS)[a])))
        for name, target in (("uniform", uniform), ("always_best", always_best)):
            for estimator in errors[name]:
                value = getattr(offpolicy, estimator)(a, p, r, target)
                errors[name][estimator].append(abs(value / truths[name] - 1))
    worst = max(float(np.mean(errors[k]["doubly_robust"])) for k in truths)
    return {
        "bandit_best_arm_share": float(np.mean(shares)),
        "ope_relative_error": worst,
        "bandit": {"runs": runs, "arms_ctr": list(ARMS), "impressions": impressions,
                   "reward_delay_impressions": delay, "floor": 0.01,
                   "best_arm_share_last_10000_min": float(np.min(shares)),
                   "regret_clicks": float(np.mean(regrets)),
                   "uniform_regret_clicks": impressions * (max(ARMS) - float(uniform @ ARMS)),
                   "ope_true_ctr": truths,
                   "ope_mean_relative_error": {k: {e: float(np.mean(v)) for e, v in est.items()} for k, est in errors.items()},
                   "ope_p90_relative_error": {k: {e: float(np.quantile(v, 0.9)) for e, v in est.items()} for k, est in errors.items()}},
    }
