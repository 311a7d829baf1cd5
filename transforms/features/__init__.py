"""Point-in-time entity features: `entity` (`AddEntityFeatures`: user, user x genre and item
features of each impression, from the events strictly before it) and `backfill`
(`SnapshotProfiles`: profiles from history up to a cut-off, into a store). The feature
functions themselves are Beam-free, in `core.features` and `core.profiles`."""
