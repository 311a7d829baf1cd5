"""Content recommendation: `validation` (`ValidateInteractions`) and `labels`
(`LabelImpressions`: outcomes joined to their impression within the attribution window)."""
