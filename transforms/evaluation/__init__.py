"""Evaluation: `metrics` (`WindowedMetrics`, `ProgressiveMetrics` over river's metrics) and
`delayed_labels` (`ScoreDelayedLabels`: a served prediction meets its delayed label). Scoring
itself is Beam-free, in `core.scoring`."""
