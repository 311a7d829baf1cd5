"""Entry points, each a dataflow read top to bottom: `python -m pipelines.<name> --help`.

- `recommend`: the content-recommendation job (the main job), its `report` and `console` output;
- `prequential`: prequential evaluation of any river model over a file;
- `backfill`: entity profiles from history into a snapshot store;
- `batch_serve`: every user's top items, ranked ahead, into the batch store;
- `train`: offline training over a time split, evaluated on the held-out range, registered;
- `retrain`: `train` over a recent window, once, on a schedule, or on a signal from a topic;
- `options`: PipelineOptions that run offline on this machine by default.
"""

from pipelines import logs as _logs

_logs.install()
