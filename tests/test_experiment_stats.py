"""The experiment statistics against reference values: their papers' closed forms computed
independently, a well-kept implementation's outputs, and Monte Carlo where the claim is about
frequencies."""
import math

import numpy as np
import pytest
from scipy import integrate, stats

from experiments import abtest, offpolicy, ratio, sequential, srm
from simulator.populations import Population, ab_test


@pytest.mark.parametrize("estimate,variance,tau2", [(0.01, 1e-5, 1e-4), (-0.003, 4e-6, 1e-5), (0.0, 1e-4, 1e-3)])
def test_the_mixture_likelihood_ratio_is_the_integral_it_stands_for(estimate, variance, tau2):
    """Johari et al.'s closed form against the mixture integrated numerically (scipy)."""
    sd, prior_sd = math.sqrt(variance), math.sqrt(tau2)
    mixture, _ = integrate.quad(lambda t: stats.norm.pdf(estimate, t, sd) * stats.norm.pdf(t, 0, prior_sd),
                                -20 * prior_sd, 20 * prior_sd, points=[estimate], limit=200)
    expected = mixture / stats.norm.pdf(estimate, 0, sd)
    assert math.exp(sequential.log_likelihood_ratio(estimate, variance, tau2)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("t,rho,alpha", [(100, 10, 0.05), (10_000, 50, 0.05), (1_000, 1_000, 0.01)])
def test_the_confidence_sequence_is_howards_two_sided_normal_mixture(t, rho, alpha):
    """Howard et al. (2021), eq. 14: unit-variance sums S_t cross sqrt((t + rho) log((t + rho) /
    (rho alpha^2))) with probability at most alpha; in the units of a mean (V = 1/t, tau2 = 1/rho)
    it is our radius times t."""
    boundary = math.sqrt((t + rho) * math.log((t + rho) / (rho * alpha ** 2)))
    assert float(sequential.radius(1 / t, 1 / rho, alpha)) * t == pytest.approx(boundary, rel=1e-12)


def test_the_p_value_and_the_confidence_sequence_agree():
    cs = sequential.ConfidenceSequence(alpha=0.05, tau2=1e-4)
    for estimate in (0.001, 0.004, 0.0105, 0.02):
        cs.update(estimate, 1e-5)
        p = float(sequential.p_value(estimate, 1e-5, 1e-4))
        assert (p <= 0.05) == (cs.low > 0), (estimate, p, cs.low)


def test_peeking_at_a_fixed_horizon_test_finds_effects_that_the_always_valid_one_does_not():
    """A/A over 200 simulated experiments, peeking after every user: a z-test at 5% rejects far
    more often than 5%; the mixture test stays under it."""
    rng = np.random.default_rng(7)
    population = Population()
    plan = abtest.Plan.for_effect(0.05, 0.10, population.user_variance(rng, 200_000))
    naive = always_valid = 0
    for _ in range(200):
        treated, x, y = ab_test(population, rng, plan.max_users // 4)
        estimate, variance = ratio.difference(ratio.Moments.running(x, y, ~treated),
                                              ratio.Moments.running(x, y, treated))
        peeks = slice(plan.min_users, None)
        naive += bool(np.any(np.abs(estimate[peeks]) / np.sqrt(variance[peeks]) > 1.96))
        always_valid += bool(np.any(sequential.p_value(estimate[peeks], variance[peeks], plan.tau2) <= 0.05))
    assert naive / 200 > 0.15 and always_valid / 200 <= 0.05, (naive, always_valid)


def test_the_delta_method_variance_is_the_ratios_variance_over_repeated_experiments():
    """Deng et al. (KDD 2018): over 3,000 replications of 2,000 skewed users, the ratio's
    spread equals the delta method's mean estimate of it; the naive binomial variance
    (impressions as if independent) is far too small."""
    rng = np.random.default_rng(3)
    population = Population()
    ratios, deltas, naives = [], [], []
    for _ in range(3000):
        x, p = population.draw(rng, 2000)
        y = rng.binomial(x, p)
        m = ratio.Moments.of(x, y)
        r = float(m.ratio())
        ratios.append(r), deltas.append(float(m.variance())), naives.append(r * (1 - r) / x.sum())
    assert np.mean(deltas) == pytest.approx(np.var(ratios, ddof=1), rel=0.08)
    assert np.mean(naives) < 0.7 * np.var(ratios, ddof=1)


def test_the_sample_ratio_checks_match_published_and_reference_values():
    # Fabijan et al., "Diagnosing Sample Ratio Mismatch in Online Controlled Experiments", KDD 2019.
    assert srm.chi_square_p([821_588, 815_482], [0.5, 0.5]) == pytest.approx(1.8e-6, rel=0.03)
    # savvi 0.3.1 (Lindon's own implementation of Lindon & Malek 2022), Multinomial(k=100):
    # 1 / odds after one update with these counts.
    assert srm.sequential_p([5000, 5400], [0.5, 0.5]) == pytest.approx(0.005030874686365349, rel=1e-9)
    assert srm.sequential_p([3000, 3300, 2900], [1, 1, 1]) == pytest.approx(8.989683329706962e-05, rel=1e-9)
    # ... and in three updates: 1/odds was 1.342, 0.98747 and 1.2155; the running minimum is ours.
    counts = np.cumsum([[20, 90], [30, 70], [25, 95]], axis=0)
    assert np.exp(-srm.log_bayes_factor(counts, [0.2, 0.8])) == pytest.approx(
        [1.3423711644607075, 0.98746901237818, 1.215523380492489], rel=1e-9)
    assert srm.sequential_p(counts, [0.2, 0.8]) == pytest.approx(0.98746901237818, rel=1e-9)


def test_an_ab_test_ships_a_real_lift_stops_a_harm_and_never_decides_in_the_burn_in():
    rng = np.random.default_rng(11)
    population = Population()
    plan = abtest.Plan.for_effect(0.05, 0.10, population.user_variance(rng, 200_000), burn_in=0.05)
    decisions = {}
    for lift in (0.3, -0.3):
        test = abtest.ABTest(plan)
        treated, x, y = ab_test(population, rng, plan.max_users, lift)
        for end in range(500, plan.max_users + 1, 500):
            analysed = np.arange(end) >= plan.burn_in_users
            t, xs, ys = treated[:end], x[:end], y[:end]
            decision = test.check(ratio.Moments.of(xs[~t & analysed], ys[~t & analysed]),
                                  ratio.Moments.of(xs[t & analysed], ys[t & analysed]),
                                  (int((~t).sum()), int(t.sum())))
            if decision.action != abtest.CONTINUE:
                break
        assert all(d.action == abtest.CONTINUE for d in test.history
                   if sum(d.users.values()) < plan.burn_in_users + plan.min_users)
        decisions[lift] = decision
    ship, stop = decisions[0.3], decisions[-0.3]
    assert ship.action == abtest.SHIP and ship.low > 0 and ship.lift_low < 0.3 < ship.lift_high
    assert stop.action == abtest.STOP and stop.high < 0 and "worse" in stop.reason
    assert ship.p_value <= 0.05 and ship.srm_p > 0.001


def test_a_broken_split_stops_the_test_on_the_sample_ratio_check():
    plan = abtest.Plan(tau2=1e-5, max_users=100_000, min_users=100)
    test = abtest.ABTest(plan)
    users = ratio.Moments.of([5] * 200, [1] * 200)
    decision = test.check(users, users, (6_000, 5_000))
    assert decision.action == abtest.STOP and "sample ratio mismatch" in decision.reason


def test_off_policy_estimates_recover_known_policy_values():
    """Logs of a uniform policy over arms of CTR 2%, 5%, 9%: each estimator recovers both the
    uniform policy's value and the always-best-arm's within 5%."""
    rng = np.random.default_rng(5)
    arms = np.array([0.02, 0.05, 0.09])
    actions = rng.integers(0, 3, 300_000)
    rewards = rng.random(actions.size) < arms[actions]
    propensities = np.full(actions.size, 1 / 3)
    for target, truth in ((np.full(3, 1 / 3), arms.mean()), (np.eye(3)[2], 0.09)):
        for estimator in (offpolicy.ips, offpolicy.snips, offpolicy.doubly_robust):
            assert estimator(actions, propensities, rewards, target) == pytest.approx(truth, rel=0.05)
