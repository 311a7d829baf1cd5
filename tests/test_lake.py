"""The data lake: raw events land partitioned by date, curation makes the training set of record
(Parquet and Avro), DuckDB queries it; on local files and on a real S3 store (SeaweedFS)."""
import collections
import glob
import os
import uuid

import duckdb
import fastavro
import pyarrow.parquet as pq
import pytest

import schemas
import simulator
from core.interactions import POSITIVE, invalid_reason
from pipelines import curate, land
from pipelines.console import UserError
from transforms.io.lake import date_of

MIDNIGHT = 1_767_225_600_000  # 2026-01-01T00:00:00Z
WINDOW_MS = 30 * 60_000
SERVED = {"event_id": "served-1", "event_type": "impression", "event_time": MIDNIGHT - 3_600_000, "user_id": "u00001",
          "item_id": "i00002", "item_genres": ["drama"], "position": 3, "device": "tv", "model_key": "recommender",
          "model_version": 7, "propensity": 0.95, "served_features": {"u_imp_1h": 2.5, "i_ctr_24h": 0.125},
          "served_probability": 0.0625, "experiment": "ab", "variant": "champion", "bucket": 4321,
          "assignment_probability": 0.5}
CLICK = {"event_id": "click-1", "event_type": "click", "event_time": SERVED["event_time"] + 60_000,
         "user_id": "u00001", "item_id": "i00002", "impression_id": "served-1"}


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    """Two hours of simulated traffic across midnight, and one impression as a server logged it."""
    path = tmp_path_factory.mktemp("events") / "served.avro"
    config = simulator.SimulatorConfig(impressions=6000, users=100, drift_at=1.0, start_ms=MIDNIGHT - 5_400_000,
                                       mean_gap_ms=1200.0)
    records = list(simulator.generate(config))
    schema = fastavro.parse_schema(schemas.load("interaction"))
    with open(path, "wb") as f:
        fastavro.writer(f, schema, [SERVED, CLICK] + records)
    return path, [SERVED, CLICK] + records


def _expected(records):
    """{impression id: label} of the valid impressions whose window closes by the newest event."""
    valid = [r for r in records if invalid_reason(r) is None]
    newest = max(r["event_time"] for r in records if r["event_time"] >= 0)
    shown = collections.Counter(r["event_id"] for r in valid if r["event_type"] == "impression")
    times = {r["event_id"]: r["event_time"] for r in valid if r["event_type"] == "impression"}
    labels = {i: False for i, n in shown.items() if n == 1 and times[i] + WINDOW_MS <= newest}
    for r in valid:
        i = r.get("impression_id")
        if r["event_type"] in POSITIVE and i in labels and times[i] <= r["event_time"] < times[i] + WINDOW_MS:
            labels[i] = True
    return labels


def _parquet(lake):
    table = pq.ParquetDataset(f"{lake}/curated/parquet/labelled_impressions", partitioning="hive").read()
    return {r["impression_id"]: r for r in table.to_pylist()}


def test_land_partitions_by_date_and_landing_again_replaces(events, tmp_path):
    path, records = events
    lake = str(tmp_path / "lake")
    first = land.run(["--events", str(path), "--lake", lake])
    files = sorted(glob.glob(f"{lake}/raw/interactions/date=*/*.avro"))
    assert [os.path.basename(os.path.dirname(f)) for f in files] == ["date=2025-12-31", "date=2026-01-01"]
    landed = {d: sum(1 for _ in fastavro.reader(open(f, "rb"))) for d, f in zip(first["landed"], files)}
    dated = collections.Counter(date_of(r["event_time"]) for r in records if r["event_time"] >= 0)
    assert landed == first["landed"] == dict(dated)  # every record with a date, under its date
    assert all(min(r["event_time"] for r in fastavro.reader(open(f, "rb"))) >= 0 for f in files)
    again = land.run(["--events", str(path), "--lake", lake])
    assert again == first and sorted(glob.glob(f"{lake}/raw/interactions/date=*/*.avro")) == files
    other = land.run(["--events", str(path), "--lake", lake, "--source", "copy"])
    assert len(glob.glob(f"{lake}/raw/interactions/date=*/*.avro")) == 2 * len(files) and other["landed"] == landed


def test_curated_impressions_carry_what_was_served_and_the_right_label(events, tmp_path):
    path, records = events
    lake = str(tmp_path / "lake")
    land.run(["--events", str(path), "--lake", lake])
    summary = curate.run(["--lake", lake])
    curated = _parquet(lake)
    expected = _expected(records)
    assert {i: r["label"] for i, r in curated.items()} == expected
    assert 0.05 < sum(expected.values()) / len(expected) < 0.3  # clicks and non-clicks both
    served = curated["served-1"]
    assert served["label"] is True and served["labelled_at"] == SERVED["event_time"] + WINDOW_MS
    assert dict(served["features"]) == SERVED["served_features"]  # as served, not recomputed
    for name in ("model_key", "model_version", "propensity", "served_probability", "position", "device", "item_genres",
                 "experiment", "variant", "bucket", "assignment_probability"):
        assert served[name] == SERVED[name]
    assert served["date"] == "2025-12-31"
    unserved = next(r for i, r in curated.items() if i != "served-1")
    assert unserved["served_probability"] is None and "u_imp_1h" in dict(unserved["features"])
    avro = {r["impression_id"]: r for f in glob.glob(f"{lake}/curated/avro/labelled_impressions/date=*/*.avro")
            for r in fastavro.reader(open(f, "rb"))}
    assert avro.keys() == curated.keys()
    assert all(avro[i]["label"] == r["label"] and avro[i]["features"] == dict(r["features"]) for i, r in curated.items())
    per_date = duckdb.sql(f"""
        SELECT date::VARCHAR AS date, count(*) AS n, sum(label::INT) AS clicks
        FROM read_parquet('{lake}/curated/parquet/labelled_impressions/*/*.parquet', hive_partitioning = true)
        GROUP BY ALL ORDER BY ALL""").fetchall()
    assert per_date == [(d, c["clicked"] + c["not_clicked"], c["clicked"]) for d, c in summary["dates"].items()]
    newest = max(r["event_time"] for r in records)
    pending = sum(1 for r in records if r["event_type"] == "impression" and invalid_reason(r) is None
                  and r["event_time"] + WINDOW_MS > newest)
    assert summary["dates"]["2026-01-01"]["pending"] == pending > 0
    assert sorted(os.listdir(lake)) == ["curated", "dead_letters", "raw"]  # no staging left behind


def test_curating_again_replaces_the_partition_and_labels_what_was_pending(events, tmp_path):
    path, records = events
    lake = str(tmp_path / "lake")
    early = tmp_path / "early.avro"
    with open(early, "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(schemas.load("interaction")),
                        [r for r in records if r["event_time"] < MIDNIGHT + 20 * 60_000])
    land.run(["--events", str(early), "--lake", lake, "--source", "served"])
    before = curate.run(["--lake", lake])
    older = glob.glob(f"{lake}/curated/*/labelled_impressions/date=2025-12-31/*")
    stamps = {f: os.stat(f).st_mtime_ns for f in older}
    land.run(["--events", str(path), "--lake", lake, "--source", "served"])  # the log grew: landed again
    after = curate.run(["--lake", lake, "--from", "2026-01-01"])
    def known(summary):
        return summary["dates"]["2026-01-01"]["clicked"] + summary["dates"]["2026-01-01"]["not_clicked"]
    assert known(after) > known(before) and before["dates"]["2026-01-01"]["pending"]  # pending, then labelled
    assert {f: os.stat(f).st_mtime_ns for f in older} == stamps  # the date not asked for is left alone
    curated = {i: r for i, r in _parquet(lake).items() if r["date"] == "2026-01-01"}
    times = {r["event_id"]: r["event_time"] for r in records if r["event_type"] == "impression"}
    assert {i: r["label"] for i, r in curated.items()} == {
        i: y for i, y in _expected(records).items() if date_of(times[i]) == "2026-01-01"}
    assert len(glob.glob(f"{lake}/curated/parquet/labelled_impressions/date=2026-01-01/*")) == 1  # replaced


def test_a_lake_without_events_is_an_error(tmp_path):
    with pytest.raises(UserError, match="nothing landed"):
        curate.run(["--lake", str(tmp_path / "lake")])


def test_the_lake_on_a_real_s3_store(events, tmp_path, s3_store, monkeypatch):
    """The same jobs on s3:// through Beam's S3 file system, read back by DuckDB over pyarrow's S3."""
    import pyarrow.dataset as ds
    import pyarrow.fs

    for name, value in s3_store.items():
        monkeypatch.setenv(name, value)
    path, records = events
    lake = f"s3://streamml/test-{uuid.uuid4().hex[:8]}"
    landed = land.run(["--events", str(path), "--lake", lake])
    summary = curate.run(["--lake", lake])
    local = str(tmp_path / "lake")
    land.run(["--events", str(path), "--lake", local])
    assert curate.run(["--lake", local])["dates"] == summary["dates"] and landed["landed"]
    s3 = pyarrow.fs.S3FileSystem(endpoint_override=s3_store["AWS_ENDPOINT_URL_S3"], region="us-east-1",
                                 access_key=s3_store["AWS_ACCESS_KEY_ID"], secret_key=s3_store["AWS_SECRET_ACCESS_KEY"])
    dataset = ds.dataset(f"{lake.removeprefix('s3://')}/curated/parquet/labelled_impressions", filesystem=s3,
                         format="parquet", partitioning="hive")
    remote = duckdb.connect().register("lake", dataset).sql("SELECT impression_id, label FROM lake ORDER BY 1")
    remote = remote.fetchall()
    assert remote == sorted((i, r["label"]) for i, r in _parquet(local).items())
    staged = s3.get_file_info(pyarrow.fs.FileSelector(f"{lake.removeprefix('s3://')}/_staging", recursive=True,
                                                      allow_not_found=True))
    assert not [f for f in staged if f.type == pyarrow.fs.FileType.File]  # no object left behind
