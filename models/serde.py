"""Model state as signed bytes: a pickle behind an HMAC-SHA256 tag that names its key.

Model state leaves the process (Beam state, Flink checkpoints, snapshot files); before we
unpickle it we check that we wrote it. A blob is `SML1` + the signing key's id (8 bytes) +
HMAC-SHA256(key, header + pickle) + the pickle. Bytes that fail the check, name a key we do
not hold, or are not in this format raise `TamperedState`, before anything is unpickled.

Keys:

- A key is text of at least 32 bytes (UTF-8), used as given: not decoded from hex or base64,
  so a 64-character `openssl rand -hex 32` is a good key. An empty or shorter key raises
  `WeakKey`.
- A key's id is the first 8 bytes of SHA-256("streamml key id" + key), printed as 16 hex
  digits: every blob says which key signed it; the id gives nothing away about the key.
- A keyring is keys separated by whitespace (one per line in a file): the first signs, all
  verify. To rotate, put a new key first and keep the old ones after it as long as state
  signed by them may be read; then drop them.
- Where from (`KeySource`, resolved where the state is read, e.g. on a worker in a DoFn's
  setup, so the key is never pickled into a pipeline; `SigningKey` and `Keyring` refuse to be
  pickled): a key file (`--state_key_file`), else `$STREAMML_STATE_KEY`, else with a store the
  file `<store>.key` beside it (made on first use, mode 0600), else one random key per process
  (fine for in-process runners; every worker of a multi-process job needs the same key).

>>> from river import linear_model
>>> keys = keyring("a" * 32)
>>> blob = dumps(linear_model.LogisticRegression(), keys)
>>> blob[4:12].hex() == keys.current.id
True
>>> type(loads(blob, keys)).__name__
'LogisticRegression'
>>> loads(blob[:-1] + b"x", keys)
Traceback (most recent call last):
...
models.serde.TamperedState: model state failed its signature check (signed by key 4ed66d94bd1e954d)
>>> keyring("short")
Traceback (most recent call last):
...
models.serde.WeakKey: a signing key needs at least 32 bytes, this one has 5 (make one: openssl rand -hex 32)
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import pickle
import threading

KEY_ENV = "STREAMML_STATE_KEY"
MIN_KEY_BYTES = 32
MAGIC = b"SML1"
_ID = 8
_TAG = hashlib.sha256().digest_size
_HEADER = len(MAGIC) + _ID


class TamperedState(ValueError):
    """Raised for state bytes whose signature does not match, or not signed by a known key."""


class WeakKey(ValueError):
    """Raised for an empty or too short signing key."""


class _NotPickled:
    def __reduce__(self):
        raise TypeError(f"a {type(self).__name__} is not pickled (it would put the key into the "
                        "pipeline): give a models.serde.KeySource, resolved on the worker")


@dataclasses.dataclass(frozen=True, repr=False)
class SigningKey(_NotPickled):
    secret: bytes

    def __post_init__(self):
        if len(self.secret) < MIN_KEY_BYTES:
            raise WeakKey(f"a signing key needs at least {MIN_KEY_BYTES} bytes, this one has "
                          f"{len(self.secret)} (make one: openssl rand -hex 32)")

    @property
    def raw_id(self) -> bytes:
        return hashlib.sha256(b"streamml key id\0" + self.secret).digest()[:_ID]

    @property
    def id(self) -> str:
        return self.raw_id.hex()

    def __repr__(self):
        return f"SigningKey(id={self.id})"


class Keyring(_NotPickled):
    """The current key (signs) and older ones (still verify)."""

    def __init__(self, current: SigningKey, previous=()):
        self.current = current
        self._by_id = {k.raw_id: k for k in (*previous, current)}

    @property
    def ids(self) -> list[str]:
        return [self.current.id] + [k.id for k in self._by_id.values() if k is not self.current]

    def get(self, raw_id: bytes) -> SigningKey | None:
        return self._by_id.get(raw_id)

    def __repr__(self):
        return f"Keyring(ids={self.ids})"


def keyring(*keys: str | bytes) -> Keyring:
    """A keyring of one or more keys, the first signing."""
    if not keys:
        raise WeakKey("no signing key given")
    made = [SigningKey(k.encode() if isinstance(k, str) else bytes(k)) for k in keys]
    return Keyring(made[0], made[1:])


def parse_keyring(text: str, where: str) -> Keyring:
    """The keyring in `text` (keys separated by whitespace, the first signing) from `where`."""
    keys = text.split()
    if not keys:
        raise WeakKey(f"{where} holds no signing key (it is empty)")
    try:
        return keyring(*keys)
    except WeakKey as e:
        raise WeakKey(f"{where}: {e}") from None


@dataclasses.dataclass(frozen=True)
class KeySource:
    """Where to find the keyring (not the key itself, so it can be pickled): `file`, else
    $STREAMML_STATE_KEY, else `<store>.key` beside `store`, else this process's random key."""

    file: str | None = None
    store: str | None = None

    def resolve(self) -> Keyring:
        if self.file:
            return read_key_file(self.file)
        if KEY_ENV in os.environ:
            return parse_keyring(os.environ[KEY_ENV], f"${KEY_ENV}")
        if self.store:
            return store_key(self.store)
        return process_key()


def read_key_file(path: str) -> Keyring:
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except UnicodeDecodeError:
        raise WeakKey(f"key file {path} is not text (keys separated by whitespace); a key file "
                      "from an older streamml holds raw bytes: delete it with its store") from None
    return parse_keyring(text, f"key file {path}")


def store_key(store_path: str) -> Keyring:
    """The keyring for a store that outlives the job: $STREAMML_STATE_KEY, else `<store>.key`
    beside it, made on first use with a random key (64 hex digits, mode 0600).

    Whoever can write the key file can forge state: keep it (or the variable) private.
    """
    if KEY_ENV in os.environ:
        return parse_keyring(os.environ[KEY_ENV], f"${KEY_ENV}")
    if "://" in store_path and not store_path.startswith("sqlite://"):
        raise WeakKey(f"no key for {store_path.split('@')[-1]}: a store on a server has no key file beside it; "
                      f"set ${KEY_ENV} (or give a key file) for every process that writes or reads it")
    path = f"{store_path}.key"
    if not os.path.exists(path):
        # Written whole under another name, then linked: a reader never sees a partial file,
        # and of two jobs starting at once, one key wins (link refuses an existing name).
        temp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        try:
            os.link(temp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temp)
    return read_key_file(path)


_process_key: list = []
_lock = threading.Lock()


def process_key() -> Keyring:
    """One random key for this process, made on first use: state signed with it is readable
    only here, by any thread or DoFn instance."""
    with _lock:
        if not _process_key:
            _process_key.append(keyring(os.urandom(32).hex()))
        return _process_key[0]


def default_key() -> Keyring:
    """$STREAMML_STATE_KEY, else this process's random key."""
    return KeySource().resolve()


def as_keyring(keys) -> Keyring:
    if isinstance(keys, Keyring):
        return keys
    if isinstance(keys, KeySource):
        return keys.resolve()
    return keyring(keys)


def dumps(obj, keys: Keyring) -> bytes:
    """`obj` pickled and signed with the keyring's current key."""
    key = as_keyring(keys).current
    header = MAGIC + key.raw_id
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return header + hmac.new(key.secret, header + body, hashlib.sha256).digest() + body


def loads(blob: bytes, keys: Keyring):
    """The object in `blob`, once its signature is checked with the key it names."""
    keys = as_keyring(keys)
    if len(blob) < _HEADER + _TAG or not blob.startswith(MAGIC):
        raise TamperedState("model state is not in the signed format (SML1): state written by an "
                            "older streamml cannot be read, start from an empty state or store")
    header, tag, body = blob[:_HEADER], blob[_HEADER:_HEADER + _TAG], blob[_HEADER + _TAG:]
    raw_id = header[len(MAGIC):]
    key = keys.get(raw_id)
    if key is None:
        raise TamperedState(f"model state failed its signature check: signed by key {raw_id.hex()}, "
                            f"not one of the keys given ({', '.join(keys.ids)}); every worker of a job "
                            f"needs the same keys (${KEY_ENV} or --state_key_file), and a rotated-out "
                            "key goes after the current one")
    if not hmac.compare_digest(tag, hmac.new(key.secret, header + body, hashlib.sha256).digest()):
        raise TamperedState(f"model state failed its signature check (signed by key {key.id})")
    return pickle.loads(body)
