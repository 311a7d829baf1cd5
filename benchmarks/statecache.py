"""The state cache's weighing of a value: Beam's (`objsize` after a walk over every loaded
module's globals) beside ours (`transforms.statecache`), per call, in this process.

    .venv/bin/python -m benchmarks.statecache
"""
from __future__ import annotations

import sys
import time

import pipelines.recommend  # noqa: F401  (the modules a job loads)
from tests.test_statecache import _state_values
from transforms import statecache


def per_call_us(weigh, values, rounds: int = 200) -> float:
    began = time.perf_counter()
    for _ in range(rounds):
        for v in values:
            weigh(v)
    return 1e6 * (time.perf_counter() - began) / (rounds * len(values))


def main() -> None:
    values = _state_values()
    beams, ours = per_call_us(statecache.BEAMS_DEEP_SIZE, values), per_call_us(statecache.deep_size, values)
    print(f"{len(sys.modules):,} modules loaded; per weighing: Beam's {beams:,.1f} us, ours {ours:,.1f} us "
          f"({beams / ours:,.0f}x)")


if __name__ == "__main__":
    main()
