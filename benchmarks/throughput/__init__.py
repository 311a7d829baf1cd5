"""Events/s of the prequential learner: bare river against the Beam pipeline, batch and streaming.

    python -m benchmarks.throughput --events 200000 --json out/throughput.json \\
        [--keys 1,1000,100000] [--models scaled_logistic,recommender] \\
        [--batch_events 50000] [--stream_events 500] [--max_pipeline_keys 3000] \\
        [--png out/throughput.png] [--md out/throughput.md] [--profile]

The same events, features and model for every measurement (the feature table: `data`); per
model and per K keys:

- `raw_river_eps`: a bare Python loop of `predict_proba_one` + `learn_one` over the decoded
  events, one model per key, made as the learner makes them (`models.factory.Fresh`: a copy
  of a pristine model) (reading and decoding the file excluded; a loop shorter than 1 s is
  repeated with fresh models, and the median counts);
- `pipeline_batch_eps`: `pipelines.prequential` (Avro -> predictions, windowed and final
  metrics, dead letters) on the default batch runner (FnApiRunner): events / wall time of
  the run; `..._excl_startup`: events / (wall - wall of the same pipeline over 10 events);
- `pipeline_stream_eps`: the same with `--streaming` (Prism);
- `ratio_batch`, `ratio_stream`: pipeline eps / bare-river eps over the same events;
- `floor_eps`: the batch pipeline's work without Beam (`measure_floor`: the project's own
  decode, examples, learner, metrics and JSON functions in one plain loop), with its cost per
  event by part; `ratio_floor` = floor / bare river is the most `ratio_batch` can reach
  with this work, and `batch_vs_floor_excl_startup` what Beam keeps of it;
- peak RSS of the process tree (the measuring process and its children, e.g. Prism),
  sampled from /proc, and `rss_per_key_kb` = (peak at K keys - peak at 1 key, over the same
  events) / keys used.

Pipeline runs may use fewer events than bare river (`runs`); every measurement runs in a
fresh Python process on a copy of the project's packages (`workers`). Results go to --json,
Markdown tables (stdout and --md) and a bar chart (--png).

What lives here, lower modules first (each imports only those above it):

- `data`: the simulator's impressions as a flat feature table, keyed round robin, as Avro;
- `models`: the measured models (`MODELS`) and their mini-batch twins;
- `floor`: the batch pipeline's work without Beam, in one plain Python pass;
- `measure`: one measurement inside a worker process (bare river, a pipeline run, the floor);
- `workers`: fresh worker processes on a snapshot of the code, and their peak RSS;
- `runs`: measurements run once each, and the result row per model and key count;
- `profiling`: the batch pipeline under cProfile, hot spots and top functions;
- `notes`: the notes that say how to read the figures;
- `benchmark`: the whole run (simulate, measure, profile) into one report;
- `markdown`, `plot`: the report as Markdown tables and as a bar chart;
- `cli`: the command line (`__main__`), and the worker's entry point (`--worker`).

`scaled_logistic` and `scaled_logistic_many` are importable from here, as the model specs
`benchmarks.throughput:scaled_logistic(_many)` name them.
"""
from benchmarks.throughput.models import scaled_logistic, scaled_logistic_many

__all__ = ["scaled_logistic", "scaled_logistic_many"]
