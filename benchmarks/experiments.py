"""The experiment statistics proved on simulated populations whose truth is known.

    .venv/bin/python -m benchmarks.experiments --json [--output FILE] [--quick] [--seed 0]

- A/A: the share of experiments in which the always-valid test rejects "no difference",
  peeking after every user up to the budget (twice the fixed-horizon sample size);
- A/B with a true relative lift of 10% on a 5% CTR: power within the budget, and the median
  sample size at decision over the fixed-horizon one;
- the confidence sequences' coverage: the share of runs whose sequence held the true
  difference at every peek, A/A and A/B;
- novelty: a variant whose CTR starts 30% high and decays to no lift at all; the share shipped
  when the test analyses every user, and when the users of the burn-in are left out;
- canary ramps (1% -> 5% -> 25% -> 50% -> promote) of a model whose log loss is 20% worse, and
  of a model as good as control: caught before 25%, aborted, promoted;
- Thompson sampling over arms of CTR 4%, 5%, 6% for 100,000 impressions with delayed clicks:
  the best arm's share of the last 10,000 decisions, regret against uniform, and off-policy
  estimates of the uniform and always-best policies from the logs.

Users are the unit throughout: each has a CTR of their own and a skewed number of impressions
(`simulator.populations`), and the A/B analysis is user-level (the delta method). `--quick`
runs a tenth of the experiments (a smoke test, not the figures).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

from benchmarks import experiments_ab, experiments_routing

FULL = {"aa_runs": 500, "ab_runs": 500, "novelty_runs": 200, "canary_runs": 200, "bandit_runs": 100}
TARGETS = {  # key: (comparison, bound) from the issue
    "aa_false_positive_rate": ("<=", 0.05), "ab_power": (">=", 0.80), "cs_coverage": (">=", 0.95),
    "canary_bad_caught_rate": (">=", 0.95), "canary_good_abort_rate": ("<=", 0.05),
    "canary_good_promoted_rate": (">=", 0.80), "bandit_best_arm_share": (">=", 0.80),
    "ope_relative_error": ("<=", 0.10), "ab_median_sample_ratio": ("<=", 2.0),
}


def run(seed: int, quick: bool) -> dict:
    sizes = {k: max(10, v // 10) if quick else v for k, v in FULL.items()}
    rng = np.random.default_rng(seed)
    started = time.monotonic()
    results = {"seed": seed, "quick": quick, "runs": sizes}
    results |= experiments_ab.benchmark(rng, sizes["aa_runs"], sizes["ab_runs"], sizes["novelty_runs"])
    results |= experiments_routing.canaries(rng, sizes["canary_runs"])
    results |= experiments_routing.bandits(rng, sizes["bandit_runs"])
    results["targets_met"] = {k: _met(results[k], *TARGETS[k]) for k in TARGETS}
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def _met(value: float, comparison: str, bound: float) -> bool:
    return value <= bound if comparison == "<=" else value >= bound


def table(results: dict) -> str:
    lines = ["| figure | value | target |", "|---|---|---|"]
    for key, (comparison, bound) in TARGETS.items():
        mark = "" if results["targets_met"][key] else " (missed)"
        lines.append(f"| `{key}` | {results[key]:.3f}{mark} | {comparison} {bound} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON (else a table)")
    parser.add_argument("--output", help="also write the JSON results to this file")
    parser.add_argument("--quick", action="store_true", help="a tenth of the experiments: a smoke test")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = run(args.seed, args.quick)
    text = json.dumps(results, indent=2, default=float)
    if args.output:
        pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.output).write_text(text + "\n")
    print(text if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
