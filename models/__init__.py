"""River models by name: `factory` (`MODULE:FUNCTION` specs, fresh models per key), `zoo`
(the default factories), `baselines`, and `serde` (model state as signed bytes)."""
