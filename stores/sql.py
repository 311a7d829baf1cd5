"""The SQL databases a store can live in, behind one small interface: SQLite (a file, the
embedded default) and PostgreSQL (a server that several processes on several machines share).

A store writes its statements once, with `?` placeholders, and runs them through a `Database`:
`execute(sql, params)` -> rows, `executemany(sql, rows)`, and `transaction(lock)` for a read-then-write that must not
interleave with another writer's (SQLite locks the whole file; PostgreSQL takes an advisory lock
on `lock`, e.g. a model key, for the transaction).

>>> db = open_database(":memory:", "store", "CREATE TABLE t (k TEXT, v BIGINT);")
>>> with db.transaction("k"):
...     _ = db.execute("INSERT INTO t VALUES (?, ?)", ("a", 1))
>>> db.execute("SELECT k, v FROM t WHERE k = ?", ("a",))
[('a', 1)]
"""
from __future__ import annotations

import contextlib
import threading

from stores.sqlite import connect, sqlite_path

SERVER_SCHEMES = ("postgresql", "postgres")


def open_database(location: str, what: str, schema: str, interface: str = ""):
    """The database at `location`: a SQLite file path, `sqlite:///PATH`, or a PostgreSQL URL
    (`postgresql://user@host:port/db`); `schema` (DDL, `;`-separated) is created if missing."""
    if location.partition("://")[0] in SERVER_SCHEMES:
        return PostgresDatabase(location, schema)
    others = tuple(f"{scheme}://" for scheme in SERVER_SCHEMES[:1])
    return SQLiteDatabase(sqlite_path(location, what, interface, others), schema)


def is_server(location: str) -> bool:
    """Whether `location` names a database server rather than a file."""
    return location.partition("://")[0] in SERVER_SCHEMES


class SQLiteDatabase:
    def __init__(self, path: str, schema: str):
        self.where = path
        self._db = connect(path, schema)

    def execute(self, sql: str, params=()) -> list:
        return self._db.execute(sql, params).fetchall()

    def executemany(self, sql: str, rows) -> None:
        self._db.executemany(sql, rows)

    @contextlib.contextmanager
    def transaction(self, lock: str = ""):
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes
            yield

    def close(self):
        self._db.close()


class PostgresDatabase:
    """One connection to a PostgreSQL server (psycopg 3), autocommit outside `transaction`;
    reconnects once when the server went away between two statements (a restart)."""

    def __init__(self, url: str, schema: str):
        import psycopg

        self._psycopg, self.url = psycopg, url
        self.where = _redacted(url)
        self._lock = threading.RLock()  # one statement or transaction at a time on the connection
        self._in_transaction = False
        self._connect()
        with self.transaction("schema"):  # several processes creating the tables at once
            for statement in filter(str.strip, schema.split(";")):
                self._db.execute(statement)

    def execute(self, sql: str, params=()) -> list:
        with self._lock:
            try:
                cursor = self._db.execute(_pg(sql), params)
            except self._psycopg.OperationalError:
                if self._in_transaction or not self._db.broken:
                    raise
                self._connect()
                cursor = self._db.execute(_pg(sql), params)
            return cursor.fetchall() if cursor.description else []

    def executemany(self, sql: str, rows) -> None:
        with self._lock, self._db.cursor() as cursor:
            cursor.executemany(_pg(sql), rows)

    @contextlib.contextmanager
    def transaction(self, lock: str = ""):
        with self._lock:
            if self._db.broken or self._db.closed:
                self._connect()
            with self._db.transaction():
                self._in_transaction = True
                try:
                    self._db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock,))
                    yield
                finally:
                    self._in_transaction = False

    def close(self):
        self._db.close()

    def _connect(self):
        try:
            self._db = self._psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except self._psycopg.OperationalError as e:
            raise ConnectionError(f"cannot reach PostgreSQL at {self.where} (bash scripts/postgres.sh start "
                                  f"runs one on loopback): {str(e).strip()}") from None


def _pg(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (the stores' SQL has no literal `?` or `%`)."""
    return sql.replace("?", "%s")


def _redacted(url: str) -> str:
    """`url` without a password, for messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{credentials.split(':')[0]}{at}{host}" if at else url
