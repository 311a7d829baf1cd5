"""Experiments on live traffic, Beam-free: who sees which variant, and what the data says.

`assignment` (sticky buckets and splits), `ratio` (user-level metrics by the delta method),
`sequential` (always-valid p-values and confidence sequences), `srm` (sample-ratio checks),
`decisions` (continue, ship or stop), `canary` (a ramp that advances only when the canary is not
worse, and aborts on a guardrail), `bandit` (Thompson sampling with the probability of each
choice), `offpolicy` (what other policies would have earned, from the logs). The serving plane
routes with them; the benchmark proves them on simulated populations whose truth is known.
"""
