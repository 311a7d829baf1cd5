"""The pipelines on a real Apache Flink cluster (Beam's FlinkRunner) give the local run's results.

The module's fixture installs and starts the project's standalone Flink cluster
(`scripts/flink.sh`: a JobManager and a TaskManager JVM on 127.0.0.1). A job goes to it from
`.venv-flink` (Beam 2.62.0, the version of the job server that Maven Central serves), in a
subprocess; the reference is the same job on the default local runner in this process (Beam
2.77.0, FnApiRunner). Every output file must hold the same records.
"""
import io
import json
import os
import signal
import subprocess
import time
import urllib.request

import fastavro
import pandas as pd
import pytest
from river import datasets

import schemas
import simulator
from core.publishing import load_version
from models import serde
from pipelines import batch_serve, prequential, recommend
from stores.online import open_online_store
from stores.registry import open_registry
from stores.toplists import open_toplists
from tests.test_kafka import _wait_for, as_batch_counts

pytestmark = pytest.mark.flink

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
SCRIPT = ["bash", str(ROOT / "scripts" / "flink.sh")]
FLINK_PYTHON = ROOT / ".venv-flink" / "bin" / "python"
REST_PORT = int(os.environ.get("FLINK_REST_PORT", "18081"))
MASTER = f"127.0.0.1:{REST_PORT}"
FLINK_STATE_KEY = "f" * 64  # the test cluster's signing key (tests only)


def _rest(path):
    with urllib.request.urlopen(f"http://{MASTER}{path}", timeout=10) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def flink_master():
    """The project's Flink cluster, installed and started for these tests if needed (and
    stopped after them, so that its JVMs do not hold memory through the rest of the suite)."""
    installed = subprocess.run(SCRIPT + ["install"], capture_output=True, text=True, timeout=1800)
    assert installed.returncode == 0, f"could not install Flink:\n{installed.stderr[-3000:]}"
    was_running = subprocess.run(SCRIPT + ["status"], capture_output=True).returncode == 0
    # The worker pool inherits this environment: the key that signs what jobs publish to a
    # registry on a server (a cluster that already ran keeps the environment it was started with).
    started = subprocess.run(SCRIPT + ["start"], capture_output=True, text=True, timeout=600,
                             env={**os.environ, "STREAMML_STATE_KEY": FLINK_STATE_KEY})
    assert started.returncode == 0, f"could not start Flink:\n{started.stderr[-3000:]}"
    yield MASTER
    if not was_running:
        subprocess.run(SCRIPT + ["stop"], capture_output=True, timeout=120)


def _finished_jobs():
    return {j["jid"] for j in _rest("/jobs/overview")["jobs"] if j["state"] == "FINISHED"}


def _on_flink(module, args, log):
    """Run `python -m module args` from .venv-flink on the cluster; the Flink jobs it finished."""
    before = _finished_jobs()
    cmd = [str(FLINK_PYTHON), "-m", module, *args,
           "--runner=FlinkRunner", f"--flink_master={MASTER}", "--parallelism=2"]
    t0 = time.monotonic()
    with open(log, "w") as f:
        done = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=900)
    elapsed = time.monotonic() - t0
    tail = log.read_text()[-4000:]
    assert done.returncode == 0, f"{module} failed on Flink ({elapsed:.0f} s):\n{tail}"
    print(f"{module} on Flink: {elapsed:.1f} s")
    return _finished_jobs() - before


def _records(folder, name):
    """The records of a JSON Lines output file, in a canonical order (order is the runner's)."""
    lines = (folder / name).read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: json.dumps(_coarse(r), sort_keys=True))


def _coarse(value):
    return round(value, 6) if isinstance(value, float) else (
        {k: _coarse(v) for k, v in value.items()} if isinstance(value, dict) else
        [_coarse(v) for v in value] if isinstance(value, list) else value)


def _same(got, want, where="") -> None:
    """Equal, except floats within 1e-9: two runs of one job on one runner differ in the last
    bit now and then (features summed in string-hash order, which varies per process: with
    PYTHONHASHSEED fixed, runs repeat exactly). Counts, steps, labels and ids must be equal."""
    if isinstance(want, float) and isinstance(got, float):
        assert abs(got - want) <= 1e-9, f"{where}: {got} != {want}"
    elif isinstance(want, dict) and isinstance(got, dict):
        assert got.keys() == want.keys(), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            _same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list) and isinstance(got, list):
        assert len(got) == len(want), f"{where}: {len(got)} != {len(want)} items"
        for i, (g, w) in enumerate(zip(got, want)):
            _same(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def test_prequential_on_flink_equals_local(flink_master, tmp_path):
    rows = [{**x, "target": y} for (x, y), _ in zip(datasets.Phishing(), range(400))]
    data = tmp_path / "phishing.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    args = ["--input", str(data), "--target", "target", "--model", "models.zoo:logistic_regression"]
    prequential.run([*args, "--output", str(tmp_path / "local")])
    jobs = _on_flink("pipelines.prequential", [*args, "--output", str(tmp_path / "flink")],
                     tmp_path / "flink.log")
    assert len(jobs) == 1, "the job did not finish on the cluster"
    local, flink = tmp_path / "local", tmp_path / "flink"
    _same(json.loads((flink / "metrics.json").read_text()), json.loads((local / "metrics.json").read_text()))
    assert json.loads((flink / "metrics.json").read_text())["predictions"] == len(rows)
    for name in ("predictions.jsonl", "windowed_metrics.jsonl", "dead_letters.jsonl"):
        _same(_records(flink, name), _records(local, name), name)


def test_recommend_on_flink_equals_local_and_publishes_to_postgresql_and_redis(flink_master, postgres_url, redis_url,
                                                                              tmp_path, monkeypatch):
    """The job on Flink writes the local run's records, and publishes, from the cluster's
    workers, to a registry on PostgreSQL and an online store on Redis what the local run
    publishes to its SQLite files."""
    events = tmp_path / "events.avro"
    simulator.write_avro(simulator.generate(simulator.SimulatorConfig(impressions=600, seed=3)), str(events))
    local = recommend.run(["--events", str(events), "--output", str(tmp_path / "local")])
    local_keys = serde.store_key(str(tmp_path / "local" / "registry.sqlite"))  # the key file beside it
    monkeypatch.setenv("STREAMML_STATE_KEY", FLINK_STATE_KEY)  # the client's, as the workers'
    jobs = _on_flink("pipelines.recommend", ["--events", str(events), "--output", str(tmp_path / "flink"),
                                             "--registry", postgres_url, "--online_store", redis_url],
                     tmp_path / "flink.log")
    assert len(jobs) == 1, "the job did not finish on the cluster"
    flink_out, local_out = tmp_path / "flink", tmp_path / "local"
    _same(json.loads((flink_out / "summary.json").read_text()), local, "summary")
    assert local["counts"]["predictions"] > 0
    for name in ("predictions.jsonl", "windowed_metrics.jsonl", "dead_letters.jsonl"):
        _same(_records(flink_out, name), _records(local_out, name), name)
    assert "Progressive metrics" in (flink_out / "report.md").read_text()
    _same_publications((postgres_url, redis_url, serde.keyring(FLINK_STATE_KEY)),
                       (str(local_out / "registry.sqlite"), str(local_out / "online.sqlite"), local_keys))


def test_batch_serving_on_flink_equals_local(flink_master, postgres_url, redis_url, tmp_path, monkeypatch):
    """pipelines.batch_serve on the cluster, over a registry on PostgreSQL and profiles on Redis,
    into a batch store on PostgreSQL: the lists the local run writes to SQLite, item for item."""
    events = tmp_path / "events.avro"
    simulator.write_avro(simulator.generate(simulator.SimulatorConfig(impressions=600, seed=5)), str(events))
    monkeypatch.setenv("STREAMML_STATE_KEY", FLINK_STATE_KEY)  # the client's, as the workers'
    recommend.run(["--events", str(events), "--output", str(tmp_path / "learned"), "--registry", postgres_url,
                   "--online_store", redis_url, "--no_baselines"])
    as_of = str(simulator.SimulatorConfig().start_ms + 86_400_000)
    common = ["--registry", postgres_url, "--online_store", redis_url, "--as_of", as_of, "--candidates", "30",
              "--k", "5", "--devices", ",tv"]
    local = batch_serve.run([*common, "--store", str(tmp_path / "toplists.sqlite")])
    jobs = _on_flink("pipelines.batch_serve", [*common, "--store", postgres_url], tmp_path / "flink.log")
    assert len(jobs) == 1, "the job did not finish on the cluster"
    here, there = open_toplists(str(tmp_path / "toplists.sqlite")), open_toplists(postgres_url)
    try:
        assert there.current().lists == local["lists"] > 2 * 10
        assert there.users() == here.users()
        for user in here.users():
            for device in ("", "tv"):
                mine, theirs = here.get(user, device), there.get(user, device)
                assert [(i["item_id"], pytest.approx(i["probability"], rel=1e-9)) for i in theirs.items] == \
                    [(i["item_id"], i["probability"]) for i in mine.items], (user, device)
    finally:
        here.close()
        there.close()


def _same_publications(got, want):
    """The same final version of each model (its steps, clock, scores and, once verified with
    each side's keys, its predictions) and the same profiles, in two (registry, online store, keys)."""
    (got_registry, got_online, got_keys), (want_registry, want_online, want_keys) = (
        (open_registry(r), open_online_store(o), k) for r, o, k in (got, want))
    for key in ("recommender", "no_features", "popularity"):
        g, w = got_registry.latest(key), want_registry.latest(key)
        assert (g.version, g.step, g.clock_ms) == (1, w.step, w.clock_ms), (g, w)
        _same(g.metrics, w.metrics, f"{key} metrics")
        models = load_version(got_registry, g, got_keys), load_version(want_registry, w, want_keys)
        x = {"user_id": "u00001", "item_id": "i00001", "device": "tv", "position": "0", "hour": "20"}
        _same(models[0].predict_proba_one(x), models[1].predict_proba_one(x), f"{key} prediction")
    for kind in ("user", "item"):
        _same({e: (s, c) for e, s, c in got_online.scan(kind)}, {e: (s, c) for e, s, c in want_online.scan(kind)}, kind)
        assert got_online.count(kind) > 0


@pytest.mark.kafka
def test_recommend_streaming_from_kafka_on_flink_equals_the_batch_job(flink_master, kafka_bootstrap, tmp_path):
    """The main job reading Kafka in streaming mode on Flink (a bounded replay: --stop_at_end)
    writes the predictions of the batch job over the same events, to files and to Kafka."""
    import uuid

    from confluent_kafka import Consumer, TopicPartition

    from core.kafka import ensure_topic, produce
    events = list(simulator.generate(simulator.SimulatorConfig(impressions=500, seed=11, late_fraction=0.0)))
    path = tmp_path / "events.avro"
    simulator.write_avro(events, str(path))
    topic = f"flink-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka_bootstrap, topic, 3)
    produce(events, kafka_bootstrap, topic, "interaction", "user_id")
    prefix, group = f"flinkout-{uuid.uuid4().hex[:8]}", f"flink-{uuid.uuid4().hex[:8]}"
    batch = recommend.run(["--events", str(path), "--output", str(tmp_path / "batch")])
    jobs = _on_flink("pipelines.recommend", [
        "--source", "kafka", "--bootstrap", kafka_bootstrap, "--topic", topic, "--group", group,
        "--stop_at_end", "--streaming", "--kafka_out", prefix, "--output", str(tmp_path / "stream")],
        tmp_path / "flink.log")
    assert len(jobs) == 1, "the job did not finish on the cluster"
    _same(as_batch_counts(json.loads((tmp_path / "stream" / "summary.json").read_text()), batch), batch, "summary")
    _same(_records(tmp_path / "stream", "predictions.jsonl"), _records(tmp_path / "batch", "predictions.jsonl"))
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        def ends(name):
            parts = consumer.list_topics(name, timeout=10).topics[name].partitions
            return {p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1] for p in parts}
        committed = {tp.partition: tp.offset for tp in consumer.committed(
            [TopicPartition(topic, p) for p in ends(topic)], timeout=10)}
        assert committed == ends(topic)  # the job committed the group's offsets to the end
        # Every model's prediction of every served impression reached Kafka (at least once).
        assert sum(ends(f"{prefix}.predictions").values()) >= 3 * batch["counts"]["predictions"]
    finally:
        consumer.close()


def _runner_args() -> list[str]:
    """What `flink.sh runner-args` prints: the cluster, and the Python code in its worker pool."""
    printed = subprocess.run(SCRIPT + ["runner-args"], capture_output=True, text=True, timeout=60, check=True)
    return printed.stdout.split()


def _running_jobs():
    return {j["jid"] for j in _rest("/jobs/overview")["jobs"] if j["state"] == "RUNNING"}


def _cancel(jid):
    request = urllib.request.Request(f"http://{MASTER}/jobs/{jid}?mode=cancel", method="PATCH")
    urllib.request.urlopen(request, timeout=10).close()


@pytest.mark.kafka
def test_endless_stream_on_flink_outlives_its_client_and_a_killed_taskmanager(flink_master, kafka_bootstrap, tmp_path):
    """The main job on an endless Kafka stream on Flink (Beam's Java KafkaIO), checkpointing
    every 2 s, its Python code in the cluster's worker pool (`flink.sh runner-args`). Once the
    job runs, its client (and the job server it started) is killed: the job runs on. Its
    TaskManager is killed (SIGKILL) once predictions are out and a checkpoint is done, and a
    replacement is started: the job restores its last checkpoint (Kafka offsets, models, profiles, timers) and
    goes on. At the end every prediction of the three models equals the batch job's over the
    same events (repeats are identical copies), which it could not if an event had been learned
    twice or its model state lost; every dead letter is there; the group's offsets are committed
    to the end; and `flink.sh cancel NAME` stops the job."""
    import uuid

    from core.kafka import ensure_topic, produce
    from tests.test_kafka import _committed_offsets, _consume_all, _end_offsets

    events = list(simulator.generate(simulator.SimulatorConfig(impressions=1500, seed=17)))
    path = tmp_path / "events.avro"
    simulator.write_avro(events, str(path))
    batch = recommend.run(["--events", str(path), "--output", str(tmp_path / "batch")])
    expected = {(p["model_key"], p["event_id"]): p for p in map(
        json.loads, (tmp_path / "batch" / "predictions.jsonl").read_text().splitlines())}
    topic, prefix = f"flink-{uuid.uuid4().hex[:8]}", f"flinkout-{uuid.uuid4().hex[:8]}"
    group = f"flink-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka_bootstrap, topic, 3)
    produce(events, kafka_bootstrap, topic, "interaction", "user_id")
    ends = _end_offsets(kafka_bootstrap, topic)

    def delivered():
        return sum(_end_offsets(kafka_bootstrap, f"{prefix}.predictions").values())

    cmd = [str(FLINK_PYTHON), "-m", "pipelines.recommend", "--source", "kafka", "--bootstrap", kafka_bootstrap,
           "--topic", topic, "--group", group, "--kafka_out", prefix, "--output", str(tmp_path / "stream"),
           "--streaming", *_runner_args(), "--parallelism=2", "--checkpointing_interval=2000",
           f"--job_name={group}"]
    predictions, copies = _TopicReader(kafka_bootstrap, f"{prefix}.predictions", "prediction"), {}
    before = _running_jobs()
    log = open(tmp_path / "flink.log", "w")
    job = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    jid = None
    try:
        _wait_for(lambda: len(_running_jobs() - before) == 1 or job.poll() is not None, 240, "the job to run")
        assert job.poll() is None, (tmp_path / "flink.log").read_text()[-4000:]
        jid, = _running_jobs() - before
        assert f"bash scripts/flink.sh cancel {group}" in (tmp_path / "flink.log").read_text()
        os.killpg(job.pid, signal.SIGKILL)  # the client and its job server: the job runs on
        job.wait()
        # Killed as soon as a checkpoint holds some of its progress: the job is fast enough now
        # to finish the rest while waiting for a third of its predictions and killing.
        _wait_for(lambda: delivered() > 0 and _rest(f"/jobs/{jid}/checkpoints")["counts"]["completed"] > 0, 300,
                  "a first prediction and checkpoint")
        checkpoints = _rest(f"/jobs/{jid}/checkpoints")["counts"]["completed"]
        killed = subprocess.run(SCRIPT + ["kill-taskmanager"], capture_output=True, text=True, timeout=60)
        assert killed.returncode == 0, killed.stderr
        at_kill = delivered()
        assert at_kill < len(expected), "the job had finished before the kill"
        started = subprocess.run(SCRIPT + ["start-taskmanager"], capture_output=True, text=True, timeout=300)
        assert started.returncode == 0, started.stderr[-2000:]

        # Done when every expected prediction is out (repeats after the restore do not count)
        # and the offsets are committed to the end.
        deadline = time.monotonic() + 400
        while not (_committed_offsets(kafka_bootstrap, topic, group) == ends and expected.keys() <= copies.keys()):
            missing = sorted(expected.keys() - copies.keys())
            assert time.monotonic() < deadline, (f"timed out after 400 s: {len(missing)} predictions "
                                                 f"missing, e.g. {missing[:5]}")
            time.sleep(0.5)
            for p in predictions.poll():
                copies.setdefault((p["model_key"], p["event_id"]), []).append(json.dumps(p, sort_keys=True))
        restored = _rest(f"/jobs/{jid}/checkpoints")["latest"]["restored"]
        cancelled = subprocess.run(SCRIPT + ["cancel", group], capture_output=True, text=True, timeout=60)
        assert cancelled.returncode == 0, cancelled.stderr
        _wait_for(lambda: _rest(f"/jobs/{jid}")["state"] == "CANCELED", 60, "the job to be cancelled")
        jid = None
    finally:
        if jid is not None:
            _cancel(jid)
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        predictions.close()
    assert restored is not None, "the job did not restore a checkpoint"
    print(f"checkpoints before the kill: {checkpoints}, predictions out at the kill: {at_kill} of "
          f"{len(expected)}, restored checkpoint {restored['id']}")

    assert all(len(set(c)) == 1 for c in copies.values()), "a repeated prediction differs"
    got = {key: json.loads(c[0]) for key, c in copies.items()}
    assert got.keys() == expected.keys()
    for key, p in got.items():  # the same model steps and labels; probabilities to 1e-9
        e = expected[key]
        assert (p["model_step"], p["y_true"], p["y_pred"]) == (e["model_step"], e["y_true"], e["y_pred"]), key
        assert all(abs(p["y_proba"][k] - e["y_proba"][k]) < 1e-9 for k in e["y_proba"]), (key, p, e)
    batch_dead = sum(v for k, v in batch["counts"].items() if k.startswith("dead_letters."))
    dead = {(d["stage"], d["reason"], d["payload"])  # repeats after the restore are read too
            for _, d in _consume_all(kafka_bootstrap, f"{prefix}.dead_letters", batch_dead, "dead_letter")}
    assert len(dead) == batch_dead


class _TopicReader:
    """Reads a topic's Avro records from its first offsets, a poll at a time (nothing until
    the topic exists)."""

    def __init__(self, bootstrap, topic, schema):
        from confluent_kafka import Consumer

        self._topic, self._schema = topic, schemas.load(schema)
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}"})
        self._assigned = False

    def poll(self) -> list[dict]:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        if not self._assigned:
            found = self._consumer.list_topics(self._topic, timeout=10).topics.get(self._topic)
            if found is None or found.error is not None or not found.partitions:
                return []
            self._consumer.assign([TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in found.partitions])
            self._assigned = True
        batch = self._consumer.consume(1000, timeout=0.5)
        return [fastavro.schemaless_reader(io.BytesIO(m.value()), self._schema) for m in batch if m.error() is None]

    def close(self):
        self._consumer.close()


def test_a_killed_taskmanager_is_replaced(flink_master):
    """scripts/flink.sh kill-taskmanager / start-taskmanager, on an idle cluster."""
    def registered():
        return _rest("/overview")["taskmanagers"]

    assert registered() >= 1
    killed = subprocess.run(SCRIPT + ["kill-taskmanager"], capture_output=True, text=True, timeout=60)
    assert killed.returncode == 0, killed.stderr
    _wait_for(lambda: registered() == 0, 60, "the JobManager to notice the lost TaskManager")
    started = subprocess.run(SCRIPT + ["start-taskmanager"], capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr[-2000:]
    assert registered() == 1 and _rest("/overview")["slots-total"] == 2
    assert subprocess.run(SCRIPT + ["status"], capture_output=True).returncode == 0


def test_the_worker_pool_listens_on_loopback_only(flink_master):
    """`flink.sh start` starts the Python worker pool (`pipelines.workers`) that `runner-args`
    names; nothing it opens listens beyond this machine."""
    from tests.test_listeners import is_loopback, listeners_of

    pid = int((ROOT / ".run" / "flink" / "pid" / "workers.pid").read_text())
    config = next(a for a in _runner_args() if a.startswith("--environment_config="))
    listening = {address for _, address in listeners_of(pid)}  # e.g. [::ffff:7f00:1]:18099 (IPv4 in IPv6)
    assert config.rsplit(":", 1)[1] in {address.rsplit(":", 1)[1] for address in listening}, listening
    assert all(is_loopback(address) for address in listening), listening
