"""Model state as signed bytes: a pickle behind an HMAC-SHA256 tag.

Model state leaves the process (Beam state, Flink checkpoints, snapshot files); before we
unpickle it we check that we wrote it. Bytes that fail the check raise `TamperedState`.

>>> from river import linear_model
>>> blob = dumps(linear_model.LogisticRegression(), key=b"k")
>>> type(loads(blob, key=b"k")).__name__
'LogisticRegression'
>>> loads(blob[:-1] + b"x", key=b"k")
Traceback (most recent call last):
...
models.serde.TamperedState: model state failed its signature check
"""
from __future__ import annotations

import hashlib
import hmac
import os
import pickle

_TAG = hashlib.sha256().digest_size
KEY_ENV = "STREAMML_STATE_KEY"


class TamperedState(ValueError):
    """Raised for state bytes whose signature does not match."""


def default_key() -> bytes:
    """The signing key: $STREAMML_STATE_KEY, else a fresh random key for this process.

    Set the variable (the same on every worker) to restore state written by an earlier job.
    """
    env = os.environ.get(KEY_ENV)
    return env.encode() if env else os.urandom(32)


def store_key(store_path: str) -> bytes:
    """The key for state kept in a store that outlives the job: $STREAMML_STATE_KEY, else a
    random key kept beside the store in `<store_path>.key` (mode 0600), made on first use.

    Whoever can write the key file can forge state: keep it (or the variable) private.
    """
    env = os.environ.get(KEY_ENV)
    if env:
        return env.encode()
    path = f"{store_path}.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as f:
            return f.read()
    key = os.urandom(32)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def dumps(obj, key: bytes) -> bytes:
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return hmac.new(key, body, hashlib.sha256).digest() + body


def loads(blob: bytes, key: bytes):
    tag, body = blob[:_TAG], blob[_TAG:]
    if len(blob) < _TAG or not hmac.compare_digest(tag, hmac.new(key, body, hashlib.sha256).digest()):
        raise TamperedState("model state failed its signature check")
    return pickle.loads(body)
