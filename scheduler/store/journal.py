"""Durable state in SQLite (WAL): command intents, desired workloads and the audit log.

Every write is its own committed transaction (``synchronous=FULL``), so an
intent returned by ``begin_intent`` is on disk before the command it announces
is sent.  Wall times are tz-aware UTC datetimes, stored as ISO 8601 text with
microseconds (so text order is time order).  The schema version lives in
``PRAGMA user_version``; ``Store.open`` applies any missing migrations.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from scheduler.core.model import OutcomeStatus, Workload

MEMORY = ":memory:"

# Migration N (1-based) brings the schema from version N-1 to N.  Append, never edit.
_MIGRATIONS: tuple[str, ...] = (
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
)

SCHEMA_VERSION = len(_MIGRATIONS)

# Both audited tables draw from one sequence so records sort in the order they were written.
_NEXT_SEQ = (
    "SELECT MAX((SELECT COALESCE(MAX(seq), 0) FROM decisions),"
    " (SELECT COALESCE(MAX(seq), 0) FROM intents)) + 1"
)


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One changed assignment, as record_decisions() writes it."""

    device_id: str
    workload: Workload
    reason: str
    expected_margin_usd_per_hour: float
    previous: Workload | None


class _NotAllOpen(Exception):
    """A batch of intent ends met an unknown or finished intent (rolled back, then named)."""


class StoreError(Exception):
    """The store could not be opened, migrated, read or written; the message names the file."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class AuditKind(enum.StrEnum):
    """Kinds of audit records."""

    DECISION = "decision"
    COMMAND = "command"


PENDING = "pending"
"""Outcome of a command whose intent has been begun but not yet finished."""


@dataclass(frozen=True, slots=True)
class Intent:
    """A command announced before it was sent."""

    id: int
    at: datetime
    device_id: str
    workload: Workload
    reason: str


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One line of the audit log: a decision, or a command with its outcome.

    ``outcome`` is None for decisions, ``"pending"`` for a command not yet
    finished and an OutcomeStatus value otherwise.  ``previous`` and
    ``expected_margin_usd_per_hour`` belong to decisions; ``finished_at`` and
    ``detail`` to commands.
    """

    kind: AuditKind
    id: int
    at: datetime
    device_id: str
    workload: Workload
    reason: str
    outcome: str | None = None
    detail: str = ""
    previous: Workload | None = None
    expected_margin_usd_per_hour: float | None = None
    finished_at: datetime | None = None


def _to_text(at: datetime) -> str:
    """Serialize a tz-aware datetime as UTC ISO text with microseconds."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"wall time must be tz-aware (UTC), got naive {at.isoformat()}")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _from_text(text: str) -> datetime:
    """Parse ISO text written by _to_text back into a UTC datetime."""
    return datetime.fromisoformat(text).astimezone(UTC)


class Store:
    """The SQLite store; open with ``Store.open(path)``, use as a context manager or close()."""

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
            script = _MIGRATIONS[number - 1]
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

    def record_decision(
        self,
        *,
        at: datetime,
        device_id: str,
        workload: Workload,
        reason: str,
        expected_margin_usd_per_hour: float,
        previous: Workload | None,
    ) -> int:
        """Append a decision (a changed assignment) to the audit log; return its id."""
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO decisions (seq, at, device_id, workload, previous, reason,"
                f" expected_margin_usd_per_hour) VALUES (({_NEXT_SEQ}), ?, ?, ?, ?, ?, ?)",
                (
                    _to_text(at),
                    device_id,
                    str(workload),
                    None if previous is None else str(previous),
                    reason,
                    float(expected_margin_usd_per_hour),
                ),
            )
            return int(cursor.lastrowid or 0)

    def record_decisions(self, at: datetime, decisions: Sequence[DecisionRecord]) -> None:
        """Append many decisions and set each device's desired workload, in one transaction.

        The same rows as record_decision() and set_desired() one by one, written
        with one statement each (a fleet-wide change: 10,000 rows at once).
        """
        if not decisions:
            return
        text = _to_text(at)
        with self._write() as db:
            first_seq = int(db.execute(_NEXT_SEQ).fetchone()[0])
            db.executemany(
                "INSERT INTO decisions (seq, at, device_id, workload, previous, reason,"
                " expected_margin_usd_per_hour) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (  # generators, not lists: no second copy of a 10,000-row change in memory
                    (
                        first_seq + index,
                        text,
                        d.device_id,
                        str(d.workload),
                        None if d.previous is None else str(d.previous),
                        d.reason,
                        float(d.expected_margin_usd_per_hour),
                    )
                    for index, d in enumerate(decisions)
                ),
            )
            db.executemany(
                "INSERT INTO desired (device_id, workload, reason, at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (device_id) DO UPDATE SET"
                " workload = excluded.workload, reason = excluded.reason, at = excluded.at",
                ((d.device_id, str(d.workload), d.reason, text) for d in decisions),
            )

    def begin_intents(
        self, at: datetime, commands: Sequence[tuple[str, Workload, str]]
    ) -> list[int]:
        """Durably record many (device id, workload, reason) commands in one transaction.

        Returns their intent ids in the order given.  Ids and sequence numbers are
        assigned here, under the write lock, so they are consecutive.
        """
        if not commands:
            return []
        text = _to_text(at)
        with self._write() as db:
            first_id = int(db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM intents").fetchone()[0])
            first_seq = int(db.execute(_NEXT_SEQ).fetchone()[0])
            db.executemany(
                "INSERT INTO intents (id, seq, at, device_id, workload, reason)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (first_id + index, first_seq + index, text, device_id, str(workload), reason)
                    for index, (device_id, workload, reason) in enumerate(commands)
                ),
            )
        return list(range(first_id, first_id + len(commands)))

    def begin_intent(self, *, at: datetime, device_id: str, workload: Workload, reason: str) -> int:
        """Durably record that a command is about to be sent; return the intent id."""
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO intents (seq, at, device_id, workload, reason)"
                f" VALUES (({_NEXT_SEQ}), ?, ?, ?, ?)",
                (_to_text(at), device_id, str(workload), reason),
            )
            return int(cursor.lastrowid or 0)

    def finish_intent(
        self, intent_id: int, *, at: datetime, status: OutcomeStatus | str, detail: str
    ) -> None:
        """Record how a command ended (an OutcomeStatus value); each intent finishes once."""
        outcome = OutcomeStatus(status)
        finished_at = _to_text(at)
        with self._write() as db:
            cursor = db.execute(
                "UPDATE intents SET finished_at = ?, status = ?, detail = ?"
                " WHERE id = ? AND finished_at IS NULL",
                (finished_at, outcome.value, detail, intent_id),
            )
            if cursor.rowcount != 1:
                exists = db.execute("SELECT 1 FROM intents WHERE id = ?", (intent_id,)).fetchone()
                problem = "already finished" if exists else "does not exist"
                raise StoreError(self._path, f"intent {intent_id} {problem}")

    def finish_intents(self, ends: Sequence[tuple[int, datetime, OutcomeStatus, str]]) -> None:
        """Record many (intent id, at, status, detail) ends in one transaction.

        Each intent finishes once: when any of them is unknown or already
        finished, nothing is written and StoreError names the first such one.
        """
        if not ends:
            return
        try:
            with self._write() as db:
                cursor = db.executemany(
                    "UPDATE intents SET finished_at = ?, status = ?, detail = ?"
                    " WHERE id = ? AND finished_at IS NULL",
                    (
                        (_to_text(at), OutcomeStatus(status).value, detail, intent_id)
                        for intent_id, at, status, detail in ends
                    ),
                )
                if cursor.rowcount != len(ends):
                    raise _NotAllOpen  # rolls the whole batch back
        except _NotAllOpen:
            raise StoreError(self._path, self._not_open([e[0] for e in ends])) from None

    def _not_open(self, intent_ids: Sequence[int]) -> str:
        """Why not every one of these intents could be finished (the first culprit)."""
        seen: set[int] = set()
        for intent_id in intent_ids:
            rows = self._read("SELECT finished_at FROM intents WHERE id = ?", (intent_id,))
            if not rows:
                return f"intent {intent_id} does not exist"
            if rows[0]["finished_at"] is not None or intent_id in seen:
                return f"intent {intent_id} already finished"
            seen.add(intent_id)
        return "an intent could not be finished"

    def open_intents(self) -> list[Intent]:
        """List intents begun but never finished (possibly in flight at a crash), oldest first."""
        rows = self._read(
            "SELECT id, at, device_id, workload, reason FROM intents"
            " WHERE finished_at IS NULL ORDER BY id"
        )
        return [
            Intent(
                id=row["id"],
                at=_from_text(row["at"]),
                device_id=row["device_id"],
                workload=Workload.parse(row["workload"]),
                reason=row["reason"],
            )
            for row in rows
        ]

    def set_desired(self, device_id: str, workload: Workload, reason: str, at: datetime) -> None:
        """Record the workload a device should run (replacing any earlier one)."""
        with self._write() as db:
            db.execute(
                "INSERT INTO desired (device_id, workload, reason, at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (device_id) DO UPDATE SET"
                " workload = excluded.workload, reason = excluded.reason, at = excluded.at",
                (device_id, str(workload), reason, _to_text(at)),
            )

    def desired(self) -> dict[str, Workload]:
        """Return the desired workload of every device that has one."""
        rows = self._read("SELECT device_id, workload FROM desired ORDER BY device_id")
        return {row["device_id"]: Workload.parse(row["workload"]) for row in rows}

    def audit(
        self,
        *,
        limit: int = 100,
        device_id: str | None = None,
        kind: str | None = None,
        reason: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
    ) -> list[AuditRecord]:
        """Decisions and commands, newest first; filter by device, kind, reason, [since, until)."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        kinds = tuple(AuditKind) if kind is None else (AuditKind(kind),)
        conditions: list[str] = []
        filters: list[Any] = []
        for column, value in (("device_id = ?", device_id), ("reason = ?", reason)):
            if value is not None:
                conditions.append(column)
                filters.append(value)
        if since is not None:
            conditions.append("at >= ?")
            filters.append(_to_text(since))
        if until is not None:
            conditions.append("at < ?")
            filters.append(_to_text(until))
        where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
        parts: list[str] = []
        params: list[Any] = []
        if AuditKind.DECISION in kinds:
            parts.append(
                "SELECT 'decision' AS kind, id, seq, at, device_id, workload, reason,"
                " NULL AS status, '' AS detail, previous, expected_margin_usd_per_hour,"
                f" NULL AS finished_at FROM decisions{where}"
            )
            params.extend(filters)
        if AuditKind.COMMAND in kinds:
            parts.append(
                "SELECT 'command' AS kind, id, seq, at, device_id, workload, reason,"
                " status, COALESCE(detail, '') AS detail, NULL AS previous,"
                f" NULL AS expected_margin_usd_per_hour, finished_at FROM intents{where}"
            )
            params.extend(filters)
        sql = " UNION ALL ".join(parts) + " ORDER BY at DESC, seq DESC LIMIT ? OFFSET ?"
        params.extend((limit, offset))
        return [self._audit_record(row) for row in self._read(sql, tuple(params))]

    @staticmethod
    def _audit_record(row: sqlite3.Row) -> AuditRecord:
        """Build an AuditRecord from a row of the audit query."""
        kind = AuditKind(row["kind"])
        outcome: str | None = None
        if kind is AuditKind.COMMAND:
            outcome = row["status"] if row["status"] is not None else PENDING
        return AuditRecord(
            kind=kind,
            id=row["id"],
            at=_from_text(row["at"]),
            device_id=row["device_id"],
            workload=Workload.parse(row["workload"]),
            reason=row["reason"],
            outcome=outcome,
            detail=row["detail"],
            previous=None if row["previous"] is None else Workload.parse(row["previous"]),
            expected_margin_usd_per_hour=row["expected_margin_usd_per_hour"],
            finished_at=None if row["finished_at"] is None else _from_text(row["finished_at"]),
        )


@dataclass(frozen=True, slots=True)
class ApiAuditEntry:
    """One mutating API request: who, from where, what it changed (before -> after), result."""

    at: datetime
    principal: str
    role: str
    remote: str
    method: str
    path: str
    before: str
    after: str
    result: str
    status_code: int
    id: int = 0


@dataclass(frozen=True, slots=True)
class OverrideRow:
    """A device pinned to a workload until a wall time, by an API principal."""

    device_id: str
    workload: Workload
    until: datetime
    note: str
    by: str
    at: datetime


def _insert_api_audit(db: sqlite3.Connection, entry: ApiAuditEntry) -> int:
    """Insert one API audit row inside an open transaction; return its id."""
    cursor = db.execute(
        "INSERT INTO api_audit (at, principal, role, remote, method, path, before, after,"
        " result, status_code) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            _to_text(entry.at),
            entry.principal,
            entry.role,
            entry.remote,
            entry.method,
            entry.path,
            entry.before,
            entry.after,
            entry.result,
            entry.status_code,
        ),
    )
    return int(cursor.lastrowid or 0)


class ControlStore(Store):
    """The Store plus operator state (overrides, settings) and the API audit log.

    Every change made through the API is committed in one transaction with
    its audit row, so an acknowledged change is never without its record.
    """

    def record_api_audit(self, entry: ApiAuditEntry) -> int:
        """Durably append an audit row for a request that changed nothing (denied, invalid)."""
        with self._write() as db:
            return _insert_api_audit(db, entry)

    def put_override(self, row: OverrideRow, audit: ApiAuditEntry) -> None:
        """Pin a device (replacing its earlier override) and audit it, in one transaction."""
        with self._write() as db:
            db.execute(
                "INSERT INTO overrides (device_id, workload, until, note, by, at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET"
                " workload = excluded.workload, until = excluded.until, note = excluded.note,"
                " by = excluded.by, at = excluded.at",
                (
                    row.device_id,
                    str(row.workload),
                    _to_text(row.until),
                    row.note,
                    row.by,
                    _to_text(row.at),
                ),
            )
            _insert_api_audit(db, audit)

    def delete_override(self, device_id: str, audit: ApiAuditEntry | None) -> bool:
        """Remove a device's override (auditing it when audit is given); True if one existed."""
        with self._write() as db:
            cursor = db.execute("DELETE FROM overrides WHERE device_id = ?", (device_id,))
            if audit is not None:
                _insert_api_audit(db, audit)
            return cursor.rowcount > 0

    def overrides(self) -> list[OverrideRow]:
        """Every stored override, by device id."""
        rows = self._read(
            "SELECT device_id, workload, until, note, by, at FROM overrides ORDER BY device_id"
        )
        return [
            OverrideRow(
                device_id=row["device_id"],
                workload=Workload.parse(row["workload"]),
                until=_from_text(row["until"]),
                note=row["note"],
                by=row["by"],
                at=_from_text(row["at"]),
            )
            for row in rows
        ]

    def put_setting(
        self, key: str, value: str | None, at: datetime, audit: ApiAuditEntry | None
    ) -> None:
        """Set (or with None, clear) a setting and audit it, in one transaction."""
        with self._write() as db:
            if value is None:
                db.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                db.execute(
                    "INSERT INTO settings (key, value, at) VALUES (?, ?, ?) ON CONFLICT (key)"
                    " DO UPDATE SET value = excluded.value, at = excluded.at",
                    (key, value, _to_text(at)),
                )
            if audit is not None:
                _insert_api_audit(db, audit)

    def settings(self) -> dict[str, str]:
        """Every stored setting."""
        return {row["key"]: row["value"] for row in self._read("SELECT key, value FROM settings")}

    def api_audit(self, *, limit: int = 100, offset: int = 0) -> list[ApiAuditEntry]:
        """API audit rows, newest first."""
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        rows = self._read(
            "SELECT * FROM api_audit ORDER BY id DESC LIMIT ? OFFSET ?", (limit, offset)
        )
        return [
            ApiAuditEntry(
                at=_from_text(row["at"]),
                principal=row["principal"],
                role=row["role"],
                remote=row["remote"],
                method=row["method"],
                path=row["path"],
                before=row["before"],
                after=row["after"],
                result=row["result"],
                status_code=row["status_code"],
                id=row["id"],
            )
            for row in rows
        ]

    def integrity_check(self) -> str:
        """The result of ``PRAGMA integrity_check`` (``ok`` when the file is sound)."""
        return "; ".join(str(row[0]) for row in self._read("PRAGMA integrity_check"))
