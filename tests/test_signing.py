"""Signed model state (models.serde): keys with ids, rotation, weak keys refused, tampering
caught before unpickling, and the key never pickled into a pipeline."""
import base64
import bz2
import os
import pickle
import zlib

import apache_beam as beam
import pytest
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.testing.test_pipeline import TestPipeline

from models import serde
from pipelines.options import pipeline_options
from stores import snapshots
from tests.conftest import BINARY, phishing_examples
from transforms.learning.learn_online import LearnOnline

OLD, NEW = "0ld-key-" + "a1" * 16, "new-key-" + "b2" * 16  # 40 bytes each
BATCH = pipeline_options([])


def _timestamped(examples):
    return [beam.window.TimestampedValue(e, e.event_time / 1000) for e in examples]


# --- keys: ids, weak keys -----------------------------------------------------------------

@pytest.mark.parametrize("key", ["", "x", "k" * 31, b"\x00" * 31])
def test_an_empty_or_short_key_is_refused(key):
    with pytest.raises(serde.WeakKey, match="at least 32 bytes"):
        serde.keyring(key)


def test_a_key_of_32_bytes_is_taken_and_has_a_stable_id_of_its_own():
    a, b = serde.keyring("k" * 32), serde.keyring("k" * 31 + "l")
    assert a.current.id == serde.keyring("k" * 32).current.id != b.current.id
    assert len(a.current.id) == 16 and "k" * 32 not in repr(a) + repr(a.current)


@pytest.mark.parametrize("value, message", [("", "empty"), ("   \n", "empty"), ("short", "has 5"),
                                            (NEW + " short", "has 5")])
def test_a_weak_key_in_the_environment_is_refused(monkeypatch, value, message):
    monkeypatch.setenv(serde.KEY_ENV, value)
    with pytest.raises(serde.WeakKey, match=message):
        serde.KeySource().resolve()


def test_a_weak_key_file_is_refused_and_so_is_a_pipeline_using_it(tmp_path):
    weak = tmp_path / "weak.key"
    weak.write_text("too-short\n")
    with pytest.raises(serde.WeakKey, match="weak.key: a signing key needs at least 32 bytes"):
        serde.KeySource(file=str(weak)).resolve()
    (tmp_path / "empty.key").write_text("")
    with pytest.raises(serde.WeakKey, match="empty"):
        serde.read_key_file(str(tmp_path / "empty.key"))
    with pytest.raises(serde.WeakKey):  # at construction, not on a worker
        with TestPipeline(options=BATCH) as p:
            _ = p | beam.Create(_timestamped(phishing_examples(5))) | LearnOnline(BINARY, key_file=str(weak))


def test_a_store_key_file_is_made_once_private_and_random(tmp_path, monkeypatch):
    monkeypatch.delenv(serde.KEY_ENV, raising=False)
    store = str(tmp_path / "learner.sqlite")
    first = serde.store_key(store)
    text = (tmp_path / "learner.sqlite.key").read_text()
    assert len(text.strip()) == 64 and int(text, 16) >= 0
    assert os.stat(store + ".key").st_mode & 0o777 == 0o600
    assert serde.store_key(store).current.id == first.current.id
    assert serde.store_key(str(tmp_path / "other.sqlite")).current.id != first.current.id
    (tmp_path / "old.sqlite.key").write_bytes(b"\xff" * 32)  # an older streamml's raw key
    with pytest.raises(serde.WeakKey, match="older streamml"):
        serde.store_key(str(tmp_path / "old.sqlite"))


def test_keys_refuse_to_be_pickled_and_a_key_source_holds_no_key(monkeypatch):
    monkeypatch.setenv(serde.KEY_ENV, NEW)
    keys = serde.KeySource().resolve()
    for obj in (keys, keys.current):
        with pytest.raises(TypeError, match="not pickled"):
            pickle.dumps(obj)
    assert NEW.encode() not in pickle.dumps(serde.KeySource(file="/k", store="/s"))
    assert serde.process_key() is serde.process_key()  # one random key per process


# --- the blob: key id, tampering, old format ------------------------------------------------

def test_a_blob_names_its_key_and_any_change_is_caught():
    keys = serde.keyring(NEW)
    blob = serde.dumps({"w": 1.5}, keys)
    assert blob[:4] == serde.MAGIC and blob[4:12].hex() == keys.current.id
    assert serde.loads(blob, keys) == {"w": 1.5}
    other_id = serde.keyring(OLD).current.raw_id
    for i in range(len(blob)):  # every byte: magic, key id, tag, pickle
        with pytest.raises(serde.TamperedState):
            serde.loads(blob[:i] + bytes([blob[i] ^ 1]) + blob[i + 1:], keys)
    with pytest.raises(serde.TamperedState, match=f"signed by key {other_id.hex()}, not one of"):
        serde.loads(blob[:4] + other_id + blob[12:], keys)
    with pytest.raises(serde.TamperedState):
        serde.loads(blob[:-1], keys)


def test_the_old_format_is_refused_with_a_clear_message():
    import hashlib
    import hmac
    body = pickle.dumps({"w": 1.5})
    old_blob = hmac.new(NEW.encode(), body, hashlib.sha256).digest() + body
    with pytest.raises(serde.TamperedState, match="not in the signed format.*older streamml"):
        serde.loads(old_blob, serde.keyring(NEW))


class _Boom:
    def __reduce__(self):
        return (os.mkdir, (os.environ["BOOM_DIR"],))


def test_bytes_that_fail_the_check_are_never_unpickled(tmp_path, monkeypatch):
    monkeypatch.setenv("BOOM_DIR", str(tmp_path / "boom"))
    forged = serde.dumps(_Boom(), serde.keyring("an attacker's own key, 32+ bytes"))
    signed = serde.dumps(_Boom(), serde.keyring(NEW))
    flipped = signed[:50] + bytes([signed[50] ^ 1]) + signed[51:]
    for blob in (forged, signed[:12] + forged[12:44] + signed[44:], flipped):  # other key, its tag, a bit
        with pytest.raises(serde.TamperedState):
            serde.loads(blob, serde.keyring(NEW))
    assert not (tmp_path / "boom").exists()
    serde.loads(signed, serde.keyring(NEW))  # the check above could fail: a good blob does run
    assert (tmp_path / "boom").exists()


# --- rotation ---------------------------------------------------------------------------------

def test_rotation_old_blobs_load_while_the_old_key_is_kept_new_ones_use_the_new_key():
    old_blob = serde.dumps("state", serde.keyring(OLD))
    rotated = serde.parse_keyring(f"{NEW}\n{OLD}\n", "a key file")
    assert serde.loads(old_blob, rotated) == "state"
    new_blob = serde.dumps("state", rotated)
    assert new_blob[4:12].hex() == serde.keyring(NEW).current.id == rotated.ids[0]
    assert serde.loads(new_blob, serde.keyring(NEW)) == "state"
    with pytest.raises(serde.TamperedState, match=serde.keyring(OLD).current.id):
        serde.loads(old_blob, serde.keyring(NEW))  # the old key dropped: its blobs are refused


def test_a_job_resumes_a_store_across_a_key_rotation(tmp_path):
    store, key_file = str(tmp_path / "learner.sqlite"), tmp_path / "state.key"
    examples = phishing_examples(60)
    key_file.write_text(OLD + "\n")
    with TestPipeline(options=BATCH) as p:
        _ = p | beam.Create(_timestamped(examples[:30])) | LearnOnline(BINARY, store=store, key_file=str(key_file))
    assert snapshots.SnapshotStore(store).load("default")[0][4:12].hex() == serde.keyring(OLD).current.id
    key_file.write_text(f"{NEW}\n{OLD}\n")  # rotated: NEW signs, OLD still reads
    with TestPipeline(options=BATCH) as p:
        _ = p | beam.Create(_timestamped(examples)) | LearnOnline(BINARY, store=store, key_file=str(key_file))
    blob, _ = snapshots.SnapshotStore(store).load("default")
    assert blob[4:12].hex() == serde.keyring(NEW).current.id
    assert serde.loads(blob, serde.keyring(NEW))[1] == 60  # every event learned once
    key_file.write_text(f"{NEW}\n")  # dropped too early: the old predictions are refused
    with pytest.raises(Exception, match="signature check: signed by key " + serde.keyring(OLD).current.id):
        with TestPipeline(options=BATCH) as p:
            _ = p | beam.Create(_timestamped(examples)) | LearnOnline(BINARY, store=store, key_file=str(key_file))


# --- the key is not in the pipeline -----------------------------------------------------------

def _unpacked(payload: bytes) -> bytes:
    """A Beam pickle as plain pickle bytes (Beam base64s and compresses them); else as given."""
    try:
        raw = base64.b64decode(payload, validate=True)
        return bz2.decompress(raw) if raw[:3] == b"BZh" else zlib.decompress(raw)
    except (ValueError, OSError, zlib.error):
        return payload


def _pickled_payloads(pipeline_proto):
    """The plain pickles in a pipeline proto: every ParDo's DoFn, every pickled transform."""
    for transform in pipeline_proto.components.transforms.values():
        if transform.spec.urn == common_urns.primitives.PAR_DO.urn:
            yield _unpacked(beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload).do_fn.payload)
        elif transform.spec.payload:
            yield _unpacked(transform.spec.payload)


def _carries(p, secret: bytes) -> bool:
    proto = p.to_runner_api()
    payloads = list(_pickled_payloads(proto))
    assert any(b"KeySource" in pickled for pickled in payloads)  # the learner's DoFn is there
    return secret in proto.SerializeToString() or any(secret in pickled for pickled in payloads)


@pytest.mark.parametrize("streaming", [False, True], ids=["batch", "streaming"])
@pytest.mark.parametrize("where", ["env", "key_file", "option", "store"])
def test_the_pipeline_carries_no_key(tmp_path, monkeypatch, streaming, where):
    monkeypatch.delenv(serde.KEY_ENV, raising=False)
    key_file = tmp_path / "state.key"
    key_file.write_text(f"{NEW}\n{OLD}\n")
    store = str(tmp_path / "learner.sqlite") if where == "store" else None
    args = ["--streaming"] if streaming else []
    if where == "env":
        monkeypatch.setenv(serde.KEY_ENV, f"{NEW} {OLD}")
    if where == "option":
        args.append(f"--state_key_file={key_file}")
    p = beam.Pipeline(options=pipeline_options(args))
    learned = (p | beam.Create(_timestamped(phishing_examples(5)))
               | LearnOnline(BINARY, store=store, key_file=str(key_file) if where == "key_file" else None))
    secrets = [NEW.encode(), OLD.encode()] if where != "store" else [
        open(store + ".key", "rb").read().strip()]
    for secret in secrets:
        assert not _carries(p, secret)
    # The search can fail: a DoFn that holds the key is found.
    _ = learned.predictions | beam.Map(lambda x, k=secrets[0]: x)
    assert _carries(p, secrets[0])
