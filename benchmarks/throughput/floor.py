"""The batch pipeline's work without Beam: the most the batch ratio can reach with this work."""
from __future__ import annotations

import time

from benchmarks.throughput.data import TARGET


def measure_floor(table: str, model: str, window_s: float = 1000.0) -> dict:
    """The batch pipeline's work without Beam: one plain Python pass of the project's own
    functions over the Avro file (decode to rows, rows to examples, per key in event order
    predict + learn, windowed metrics per key and over all keys, final metrics, predictions
    and windowed metrics as JSON lines). What Beam adds is the pipeline's time beyond this;
    `floor_eps` / bare river is the most `ratio_batch` can reach with this work.
    """
    import collections

    from apache_beam.transforms.window import IntervalWindow

    from core.learning import Learner
    from models import serde
    from core.scoring import score
    from transforms.evaluation.metrics import ScoresFn, _WindowMetricDoFn
    from transforms.io.files import _DecodeRangeDoFn
    from transforms.io.sinks import _json_line
    from transforms.learning.examples import _ToExampleDoFn

    clock = [time.perf_counter()]
    parts = {}

    def lap(name):
        clock.append(time.perf_counter())
        parts[name] = clock[-1] - clock[-2]

    read = _DecodeRangeDoFn(None, "event_time", "event_id")
    rows = [timestamped.value for timestamped in read.process((table, None))]  # all its blocks
    lap("decode_us")
    to_examples = _ToExampleDoFn(TARGET, ("event_time", "event_id"), "key")
    examples = [example for row in rows for example in to_examples.process(row)]
    lap("examples_us")
    by_key = collections.defaultdict(list)
    for example in examples:
        by_key[example.model_key].append(example)
    learner = Learner(model, serde.process_key())
    learner.open()
    predictions = []
    for key in sorted(by_key):
        predictions += learner.apply(key, by_key[key], learner.new_model(key), 0, None)[1]
    lap("predict_learn_us")
    size_ms = int(window_s * 1000)
    windows = collections.defaultdict(list)
    for p in predictions:
        windows[p.event_time // size_ms * size_ms].append(p)
    scores, scorer = ScoresFn("binary"), _WindowMetricDoFn("binary")  # one scope, as WindowedMetrics per key
    windowed = [m for start, ps in sorted(windows.items())
                for m in scorer.process(("", scores.add_input(scores.create_accumulator(), ps)),
                                        IntervalWindow(start / 1000, (start + size_ms) / 1000))]
    lap("windowed_metrics_us")
    final = score(predictions, "binary")
    lap("final_metrics_us")
    lines = [_json_line(r) for r in predictions] + [_json_line(r) for r in windowed]
    lap("write_us")
    n = len(predictions)
    wall = clock[-1] - clock[0]
    return {"events": n, "wall_s": wall, "eps": n / wall, "rocauc": final["rocauc"], "dead_letters": 0,
            "lines": len(lines), "parts_us_per_event": {k: round(v * 1e6 / n, 2) for k, v in parts.items()}}
