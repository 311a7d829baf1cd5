"""Content recommendation: `validation` (`ValidateInteractions`) and `labels`
(`LabelImpressions`: outcomes joined to their impression within the attribution window) and
`batch_serving` (`RankUsers`, `StageTopLists`: every user's top items, into the batch store)."""
