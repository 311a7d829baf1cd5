"""A seeded interaction simulator that knows the truth: a library and a command line.

- `stream`: the simulated stream (`SimulatorConfig`, `generate`, `generate_with_truth`,
  `write_avro`, `malformed_kind`);
- `world`: users, items, tastes and outcomes behind it;
- `cli`: `python -m simulator --output FILE.avro | --kafka BOOTSTRAP`.
"""
from simulator.stream import (SimulatorConfig, Truth, generate, generate_with_truth,  # noqa: F401
                              malformed_kind, write_avro)
