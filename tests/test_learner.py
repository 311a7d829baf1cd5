"""LearnOnline: predict-then-learn per model key, in event order, batch and streaming alike."""
import dataclasses
import os
import random

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from pipelines.options import pipeline_options
from tests.conftest import BINARY, phishing_examples, river_predictions
from core.learning import Learner
from transforms.learning.learn_online import LearnOnline

BATCH = pipeline_options([])
STREAMING = pipeline_options(["--streaming"])  # Prism: timers hold the watermark


def _summary(p):
    return (p.event_id, p.model_key, p.y_pred, p.y_proba and round(p.y_proba[True], 12), p.model_step)


def _expected(examples):
    ref = river_predictions(examples)
    steps = {}
    out = []
    for e in sorted(examples, key=lambda e: e.order()):
        y_pred, proba = ref[e.event_id]
        step = steps.get(e.model_key, 0)
        out.append((e.event_id, e.model_key, y_pred, proba and round(proba[True], 12), step))
        steps[e.model_key] = step + 1
    return out


def _timestamped(examples):
    return [beam.window.TimestampedValue(e, e.event_time / 1000) for e in examples]


def _stream_of(examples, step=25, seed=0):
    """A TestStream: chunks of `step` events, shuffled within a chunk, watermark after each."""
    stream = TestStream()
    ordered = sorted(examples, key=lambda e: e.order())
    for i in range(0, len(ordered), step):
        chunk = ordered[i:i + step]
        random.Random(seed + i).shuffle(chunk)
        stream = stream.add_elements(_timestamped(chunk))
        stream = stream.advance_watermark_to(max(e.event_time for e in chunk) / 1000 + 0.001)
    return stream.advance_watermark_to_infinity()


@pytest.mark.parametrize("keys", [("default",), ("a", "b", "c")])
def test_batch_predictions_equal_bare_river_in_any_input_order(keys):
    examples = phishing_examples(300, keys)
    shuffled = examples[:]
    random.Random(42).shuffle(shuffled)
    with TestPipeline(options=BATCH) as p:
        out = p | beam.Create(_timestamped(shuffled)) | LearnOnline(BINARY)
        assert_that(out.predictions | beam.Map(_summary), equal_to(_expected(examples)))
        assert_that(out.dead_letters, equal_to([]), label="NoDeadLetters")


def test_batch_learner_sorts_through_runs_and_applies_them_in_small_pieces(monkeypatch, tmp_path):
    """Bounded input is sorted as an external sort does: with the sizes made small, each key's
    history spans many run files, frames and blocks, and copies of events sit in other runs.
    The predictions still equal bare river's, each copy is one `duplicate`, the store holds
    every event learned once, the runs were in `--temp_location` and are gone after the job."""
    from models import serde
    from stores import snapshots
    from transforms.learning import batch, runs

    written = []
    write_run = batch.write_run
    monkeypatch.setattr(batch, "write_run", lambda path, *a: (written.append(path), write_run(path, *a)))
    monkeypatch.setattr(batch, "RUN", 7)
    monkeypatch.setattr(batch, "BLOCK", 10)
    monkeypatch.setattr(runs, "FRAME", 3)
    monkeypatch.setattr(runs, "FAN_IN", 4)  # more runs than that: merged in passes first
    examples = phishing_examples(300, ("a", "b"))
    copies = [examples[18], examples[41], examples[299]]  # a's 10th event: the end of a block
    store = str(tmp_path / "learner.sqlite")
    options = pipeline_options(["--temp_location", str(tmp_path / "temp")])
    with TestPipeline(options=options) as p:
        out = p | beam.Create(_timestamped(examples + copies)) | LearnOnline(BINARY, store=store)
        assert_that(out.predictions | beam.Map(_summary), equal_to(_expected(examples)))
        reasons = out.dead_letters | beam.Map(lambda d: (d.reason.split(":")[0], d.event_time))
        assert_that(reasons, equal_to([("duplicate", e.event_time) for e in copies]), label="Dead")

    assert len(written) >= (len(examples) + len(copies)) // 7
    assert all(path.startswith(str(tmp_path / "temp" / "streamml-runs-")) for path in written)
    assert not any(os.path.exists(path) for path in written)
    assert list((tmp_path / "temp").glob("streamml-runs-*")) == []
    saved = snapshots.SnapshotStore(store)
    for key in ("a", "b"):
        blob, applied = saved.load(key)
        assert serde.loads(blob, serde.store_key(store))[1] == sum(e.model_key == key for e in examples)
        assert applied == max(e.order() for e in examples if e.model_key == key)


def test_many_runs_are_merged_in_passes_of_at_most_fan_in(monkeypatch, tmp_path):
    from models import serde
    from transforms.learning import runs

    monkeypatch.setattr(runs, "FAN_IN", 2)
    monkeypatch.setattr(runs, "FRAME", 2)
    opened = []
    read_run = runs.read_run
    monkeypatch.setattr(runs, "read_run", lambda path, keys: (opened.append(path), read_run(path, keys))[1])
    keys = serde.keyring("k" * 32)
    examples = phishing_examples(90, ("a", "b", "c"))
    random.Random(3).shuffle(examples)
    paths = [str(tmp_path / f"run{i}") for i in range(9)]
    for i, path in enumerate(paths):
        runs.write_run(path, sorted(examples[i * 10:(i + 1) * 10], key=runs.run_order), keys)
    merged = list(runs.merge_runs(paths, keys, str(tmp_path)))
    assert [e.event_id for e in merged] == [e.event_id for e in sorted(examples, key=runs.run_order)]
    assert len(opened) == 9 + 5 + 3 + 2  # 9 runs -> 5 -> 3 -> 2, read at once
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"run{i}" for i in range(9))


def test_a_run_that_was_altered_or_cut_is_refused(tmp_path):
    from models import serde
    from transforms.learning.runs import read_run, write_run

    keys = serde.keyring("k" * 32)
    path = str(tmp_path / "run")
    write_run(path, phishing_examples(600), keys)
    assert [e.event_id for e in read_run(path, keys)] == [e.event_id for e in phishing_examples(600)]
    data = open(path, "rb").read()
    open(path, "wb").write(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    with pytest.raises(serde.TamperedState, match=f"{path}: a run of the batch learner: .*signature"):
        list(read_run(path, keys))
    open(path, "wb").write(data[:-5])
    with pytest.raises(IOError, match="ends inside a frame"):
        list(read_run(path, keys))
    with pytest.raises(serde.TamperedState, match="signature"):
        list(read_run(path, serde.keyring("x" * 32)))
    open(path, "wb").write((1 << 62).to_bytes(8, "big") + data[8:])  # a damaged length
    with pytest.raises(IOError, match="ends inside a frame"):
        list(read_run(path, keys))
    with pytest.raises(IOError, match="--temp_location must be storage every worker shares"):
        list(read_run(str(tmp_path / "elsewhere"), keys))


@pytest.mark.parametrize("tick_ms", [1, 250, 7_000])
def test_streaming_predictions_equal_batch_predictions(tick_ms):
    """Whatever the tick (events 1 s apart: one, or several per key per tick), and though the
    watermark moves in steps of 25 events while some wait."""
    examples = phishing_examples(200, ("a", "b"))
    with TestPipeline(options=STREAMING) as p:
        out = p | _stream_of(examples) | LearnOnline(BINARY, tick_ms=tick_ms)
        assert_that(out.predictions | beam.Map(_summary), equal_to(_expected(examples)))


def test_streaming_late_and_duplicate_events_are_dead_letters_not_lost():
    examples = phishing_examples(60)
    on_time, late = examples[:50], examples[50:]
    late_early = [e.__class__(e.event_id, e.event_time - 45_000, e.x, e.y) for e in late[:5]]
    stream = (TestStream()
              .add_elements(_timestamped(on_time[:30]))
              .advance_watermark_to(30)
              .add_elements(_timestamped(on_time[30:] + [on_time[5], on_time[40]]))  # replay, copy
              .advance_watermark_to(60)
              .add_elements(_timestamped(late_early))  # event times already passed
              .advance_watermark_to_infinity())
    with TestPipeline(options=STREAMING) as p:
        out = p | stream | LearnOnline(BINARY)
        assert_that(out.predictions | beam.Map(_summary), equal_to(_expected(on_time)))
        reasons = out.dead_letters | beam.Map(lambda d: (d.reason.split(":")[0], d.event_time))
        assert_that(reasons, equal_to(
            [("late", on_time[5].event_time), ("duplicate", on_time[40].event_time)]
            + [("late", e.event_time) for e in late_early]), label="Dead")


def test_model_spec_is_checked_when_the_pipeline_is_built():
    with pytest.raises(ValueError, match="MODULE:FUNCTION"):
        LearnOnline("not-a-spec")
    with pytest.raises(TypeError, match="not a river estimator"):
        LearnOnline("collections:OrderedDict")


@pytest.mark.parametrize("options", [BATCH, STREAMING], ids=["batch", "streaming"])
def test_a_restarted_job_resumes_from_its_store_and_learns_nothing_twice(options, tmp_path):
    """Job 1 learns the first 120 events, then dies; job 2 gets every event again (the
    uncommitted ones and a replay of all of job 1's): it re-emits job 1's stored predictions,
    learns only the rest, and everything equals one uninterrupted run."""
    keys = ("a", "b")
    examples = phishing_examples(240, keys)
    store = str(tmp_path / "learner.sqlite")
    with TestPipeline(options=options) as p:
        first = p | beam.Create(_timestamped(examples[:120])) | LearnOnline(BINARY, store=store)
        assert_that(first.predictions | beam.Map(_summary), equal_to(_expected(examples[:120])))
    with TestPipeline(options=options) as p:
        second = p | beam.Create(_timestamped(examples)) | LearnOnline(BINARY, store=store)
        assert_that(second.predictions | beam.Map(_summary), equal_to(_expected(examples)))
        assert_that(second.dead_letters, equal_to([]), label="NoDeadLetters")

    from models import serde
    from stores import snapshots
    saved = snapshots.SnapshotStore(store)
    for key in keys:
        blob, applied = saved.load(key)
        _, step = serde.loads(blob, serde.store_key(store))
        assert step == sum(e.model_key == key for e in examples)  # each event learned once
        assert applied == max(e.order() for e in examples if e.model_key == key)


def test_a_store_written_with_another_key_is_refused(tmp_path):
    store = str(tmp_path / "learner.sqlite")
    examples = phishing_examples(20)
    one, two = tmp_path / "one.key", tmp_path / "two.key"
    one.write_text("1" * 64)
    two.write_text("2" * 64)
    with TestPipeline(options=BATCH) as p:
        _ = p | beam.Create(_timestamped(examples)) | LearnOnline(BINARY, store=store, key_file=str(one))
    with pytest.raises(Exception, match="signature"):
        with TestPipeline(options=BATCH) as p:
            _ = p | beam.Create(_timestamped(examples)) | LearnOnline(BINARY, store=store, key_file=str(two))


MINI = "models.zoo:logistic_regression?learning_rate=0.5"  # one SGD step per mini-batch


def _mini_batch_reference(examples, spec, size):
    """Bare river, per key in event order: predict_proba_many then learn_many, `size` at a time."""
    import pandas as pd

    from models import factory

    by_key, out = {}, []
    for e in sorted(examples, key=lambda e: e.order()):
        by_key.setdefault(e.model_key, []).append(e)
    for key, events in by_key.items():
        model = factory.build(spec)
        for i in range(0, len(events), size):
            chunk = events[i:i + size]
            X = pd.DataFrame([e.x for e in chunk])
            for e, proba in zip(chunk, model.predict_proba_many(X).to_dict("records")):
                out.append((e.event_id, key, max(proba, key=proba.get), round(proba[True], 12), i))
            model.learn_many(X, pd.Series([e.y for e in chunk]))
    return out


def test_mini_batch_predicts_every_event_once_before_learning_its_mini_batch():
    """Opt-in mini-batch mode: one prediction per event, made by the model as it was before
    the event's mini-batch (model_step = events learned before it), equal to bare river's
    predict_proba_many + learn_many over the same mini-batches, in any input order."""
    examples = phishing_examples(600, ("a", "b"))
    shuffled = examples[:]
    random.Random(7).shuffle(shuffled)
    with TestPipeline(options=BATCH) as p:
        out = p | beam.Create(_timestamped(shuffled)) | LearnOnline(MINI, mini_batch=25)
        assert_that(out.predictions | beam.Map(_summary),
                    equal_to(_mini_batch_reference(examples, MINI, 25)))
        assert_that(out.dead_letters, equal_to([]), label="NoDeadLetters")


def test_mini_batch_accuracy_is_comparable_to_per_event_learning():
    from river import metrics

    examples = phishing_examples(600)
    per_event, mini = metrics.ROCAUC(), metrics.ROCAUC()
    ref = river_predictions(examples)
    for e in examples:
        per_event.update(e.y, ref[e.event_id][1])
    for event_id, _, _, p_true, _ in _mini_batch_reference(examples, MINI, 25):
        mini.update(next(e.y for e in examples if e.event_id == event_id), {True: p_true, False: 1 - p_true})
    assert per_event.get() > 0.9
    assert mini.get() > per_event.get() - 0.03


def test_mini_batch_in_streaming_predicts_every_event_once():
    """Streaming mini-batches never span two firings: boundaries may differ from batch, but
    every event is predicted once, before its own mini-batch is learned."""
    examples = phishing_examples(200, ("a", "b"))

    def check(predictions):
        assert sorted(p.event_id for p in predictions) == sorted(e.event_id for e in examples)
        for key in ("a", "b"):
            mine = sorted((p for p in predictions if p.model_key == key), key=lambda p: p.event_time)
            steps = [p.model_step for p in mine]
            assert steps == sorted(steps) and all(s <= i for i, s in enumerate(steps))
            assert steps[-1] < len(mine)

    with TestPipeline(options=STREAMING) as p:
        out = p | _stream_of(examples) | LearnOnline(MINI, mini_batch=10)
        assert_that(out.predictions, check)
        assert_that(out.dead_letters, equal_to([]), label="NoDeadLetters")


def test_mini_batch_refuses_models_that_cannot_learn_mini_batches():
    with pytest.raises(ValueError, match="mini_batch needs a model that learns mini-batches"):
        LearnOnline("models.zoo:hoeffding_tree", mini_batch=10)
    with pytest.raises(ValueError, match="mini_batch must be >= 0"):
        LearnOnline(MINI, mini_batch=-1)


def test_batch_blocks_keep_whole_mini_batches_and_bounded_replays(monkeypatch, tmp_path):
    """Blocks of a few events (made small): mini-batches are the same as in one pass, and a
    restarted job replays 120 stored events in blocks, then learns the rest."""
    from transforms.learning import batch

    monkeypatch.setattr(batch, "BLOCK", 60)  # 50 events a block with mini-batches of 25
    examples = phishing_examples(600, ("a", "b"))
    with TestPipeline(options=BATCH) as p:
        out = p | beam.Create(_timestamped(examples)) | LearnOnline(MINI, mini_batch=25)
        assert_that(out.predictions | beam.Map(_summary), equal_to(_mini_batch_reference(examples, MINI, 25)))

    monkeypatch.setattr(batch, "BLOCK", 7)
    examples, store = phishing_examples(240, ("a", "b")), str(tmp_path / "learner.sqlite")
    with TestPipeline(options=BATCH) as p:
        _ = p | beam.Create(_timestamped(examples[:120])) | LearnOnline(BINARY, store=store)
    applied = []
    apply = Learner.apply
    monkeypatch.setattr(Learner, "apply", lambda self, key, ready, *a: (applied.append(len(ready)),
                                                                         apply(self, key, ready, *a))[1])
    with TestPipeline(options=BATCH) as p:
        second = p | beam.Create(_timestamped(examples)) | LearnOnline(BINARY, store=store)
        assert_that(second.predictions | beam.Map(_summary), equal_to(_expected(examples)))
        assert_that(second.dead_letters, equal_to([]), label="NoDeadLetters")
    assert max(applied) <= 2 * 7 and sum(applied) == len(examples)  # 7 replays and 7 new at most


def test_published_versions_carry_the_progressive_scores_of_a_plain_test_then_train_loop(tmp_path):
    """Served predictions now, their labels later (`learn` mode), and events predicted and
    learned at once: each label is scored by the model as it stands just before learning it,
    and the version published carries those scores, as river's metrics over a plain loop give."""
    from river import metrics

    from core.publishing import Publisher
    from core.records import LEARN, PREDICT
    from models import factory, serde
    from stores.registry import open_registry

    rows = phishing_examples(300)
    delayed = [dataclasses.replace(e, mode=PREDICT, y=None) for e in rows[:200]] + \
              [dataclasses.replace(e, event_time=e.event_time + 30_500, mode=LEARN) for e in rows[:200]]
    events = sorted(delayed + rows[200:], key=lambda e: e.order())
    keys = serde.keyring("k" * 32)
    learner = Learner(BINARY, keys, publisher=Publisher(str(tmp_path / "registry.sqlite"), keys=keys))
    learner.open()
    model, step = learner.resume("default", None)
    _, _, _, last, step = learner.apply("default", list(events), model, step, None)
    learner.publish("default", model, step, last, final=True)
    learner.close()

    reference, scored = factory.Fresh(BINARY)(), {"accuracy": metrics.Accuracy(), "rocauc": metrics.ROCAUC(),
                                                 "logloss": metrics.LogLoss()}
    labels, probabilities = [], []
    for e in events:
        if e.mode == PREDICT:
            continue  # a prediction served: nothing learned, nothing scored yet
        proba = reference.predict_proba_one(e.x)
        for name, metric in scored.items():
            metric.update(e.y, max(proba, key=proba.get) if name == "accuracy" else proba)
        labels.append(e.y)
        probabilities.append(proba.get(True, 0.0))
        reference.learn_one(e.x, e.y)
    (version,) = open_registry(str(tmp_path / "registry.sqlite")).versions("default")
    assert version.step == 300
    pairs = [(p, q) for p, y in zip(probabilities, labels) if y for q, z in zip(probabilities, labels) if not z]
    window = {"labels": 300, "ctr": sum(labels) / 300, "mean_p": sum(probabilities) / 300,  # all 300 fit in it
              "logloss": scored["logloss"].get(),
              "rocauc": sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in pairs) / len(pairs)}  # exact
    assert version.metrics == pytest.approx({
        "count": 300, **{name: m.get() for name, m in scored.items()},
        **{f"window_{k}": v for k, v in window.items()}, "label_ms": events[-1].event_time}, rel=1e-9)
