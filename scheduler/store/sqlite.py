"""The SQLite file both stores share: opening, WAL, the schema migrations, and wall-time text.

Every write is its own committed transaction (``synchronous=FULL``).  Wall
times are tz-aware UTC datetimes, stored as ISO 8601 text with microseconds (so
text order is time order).  The schema version lives in ``PRAGMA user_version``;
``Database.open`` applies any missing migrations.  The loop's journal
(scheduler.store.journal) and the operator's state (scheduler.store.operator)
are tables of this one schema.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

MEMORY = ":memory:"

# Migration N (1-based) brings the schema from version N-1 to N.  Append, never edit.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE decisions (
        id INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        at TEXT NOT NULL,
        device_id TEXT NOT NULL,
        workload TEXT NOT NULL,
        previous TEXT,
        reason TEXT NOT NULL,
        expected_margin_usd_per_hour REAL NOT NULL
    );
    CREATE INDEX decisions_device_at ON decisions (device_id, at);
    CREATE TABLE intents (
        id INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        at TEXT NOT NULL,
        device_id TEXT NOT NULL,
        workload TEXT NOT NULL,
        reason TEXT NOT NULL,
        finished_at TEXT,
        status TEXT,
        detail TEXT
    );
    CREATE INDEX intents_device_at ON intents (device_id, at);
    CREATE INDEX intents_open ON intents (id) WHERE finished_at IS NULL;
    CREATE TABLE desired (
        device_id TEXT PRIMARY KEY,
        workload TEXT NOT NULL,
        reason TEXT NOT NULL,
        at TEXT NOT NULL
    );
    """,
    """
    CREATE TABLE overrides (
        device_id TEXT PRIMARY KEY,
        workload TEXT NOT NULL,
        until TEXT NOT NULL,
        note TEXT NOT NULL,
        by TEXT NOT NULL,
        at TEXT NOT NULL
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        at TEXT NOT NULL
    );
    CREATE TABLE api_audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        principal TEXT NOT NULL,
        role TEXT NOT NULL,
        remote TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        before TEXT NOT NULL,
        after TEXT NOT NULL,
        result TEXT NOT NULL,
        status_code INTEGER NOT NULL
    );
    CREATE INDEX api_audit_at ON api_audit (at);
    """,
    """
    CREATE TABLE pushed_prices (
        input TEXT PRIMARY KEY,
        value REAL NOT NULL,
        source TEXT NOT NULL,
        interval_start TEXT NOT NULL,
        interval_end TEXT NOT NULL,
        received_at TEXT NOT NULL
    );
    """,
    """
    CREATE TABLE report_days (
        day TEXT NOT NULL,
        device_id TEXT NOT NULL,
        up_s REAL NOT NULL DEFAULT 0,
        down_s REAL NOT NULL DEFAULT 0,
        curtailed_s REAL NOT NULL DEFAULT 0,
        maintenance_s REAL NOT NULL DEFAULT 0,
        energy_wh REAL NOT NULL DEFAULT 0,
        revenue_usd REAL NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0,
        always_on_margin_usd REAL NOT NULL DEFAULT 0,
        dr_wh REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (day, device_id)
    );
    """,
    """
    CREATE TABLE meter_minutes (
        minute TEXT PRIMARY KEY,
        sum_w REAL NOT NULL,
        samples INTEGER NOT NULL
    );
    CREATE TABLE mv_events (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        start TEXT NOT NULL,
        end TEXT,
        target_kw REAL,
        reduction_kw REAL,
        response_limit_seconds REAL
    );
    CREATE INDEX mv_events_start ON mv_events (start);
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    """The store could not be opened, migrated, read or written; the message names the file."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def to_text(at: datetime) -> str:
    """Serialize a tz-aware datetime as UTC ISO text with microseconds."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"wall time must be tz-aware (UTC), got naive {at.isoformat()}")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def from_text(text: str) -> datetime:
    """Parse ISO text written by to_text back into a UTC datetime."""
    return datetime.fromisoformat(text).astimezone(UTC)


class Database:
    """A migrated SQLite database; open with ``open(path)``, use as a context manager or close()."""

    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        self._db = connection
        self._path = path
        self._lock = threading.Lock()

    @property
    def path(self) -> str:
        """The database file (or ``:memory:``)."""
        return self._path

    @classmethod
    def open(cls, path: Path | str) -> Self:
        """Open (creating the file and its directory if needed) and migrate the database."""
        name = str(path)
        if name != MEMORY:
            try:
                Path(name).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(name, f"cannot create directory: {exc.strerror or exc}") from exc
        try:
            connection = sqlite3.connect(name, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(name, f"cannot open: {exc}") from exc
        connection.row_factory = sqlite3.Row
        store = cls(connection, name)
        try:
            store._configure()
            store._migrate()
        except sqlite3.Error as exc:
            connection.close()
            raise StoreError(name, f"cannot open for writing: {exc}") from exc
        except StoreError:
            connection.close()
            raise
        return store

    def _configure(self) -> None:
        """Switch to WAL with full sync; a file database that refuses WAL is an error."""
        row = self._db.execute("PRAGMA journal_mode=WAL").fetchone()
        mode = str(row[0]).lower() if row else ""
        if self._path != MEMORY and mode != "wal":
            raise StoreError(self._path, f"cannot enable WAL journal mode (got {mode!r})")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        # A 512 KiB page cache (SQLite's default is 2 MiB): the store is written in batches
        # and read rarely, so a big cache only adds resident memory to the daemon.
        self._db.execute("PRAGMA cache_size=-512")

    def _migrate(self) -> None:
        """Apply the migrations this database has not seen yet."""
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                self._path,
                f"schema version {version} is newer than this wattmux supports ({SCHEMA_VERSION})",
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            script = MIGRATIONS[number - 1]
            # executescript commits first; wrap the migration and its version bump together.
            self._db.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
            )

    @property
    def journal_mode(self) -> str:
        """The journal mode SQLite reports (``wal`` for a file database)."""
        return str(self._db.execute("PRAGMA journal_mode").fetchone()[0]).lower()

    @property
    def schema_version(self) -> int:
        """The schema version stored in the database."""
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One committed write transaction; SQLite errors become StoreError."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(self._path, f"write failed: {exc}") from exc

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Run a query; SQLite errors become StoreError."""
        with self._lock:
            try:
                return list(self._db.execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise StoreError(self._path, f"read failed: {exc}") from exc
