"""Online learning in Beam: `examples` (rows to learner examples) and `learn_online`
(`LearnOnline`: predict, emit, then learn per model key, in event order), over its batch
(`batch`: grouped per shard of keys) and streaming (`streaming`: state and timers) forms. The
ordering and apply logic is Beam-free, in `core.learning`."""
