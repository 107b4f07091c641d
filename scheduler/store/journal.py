"""The loop's journal in SQLite: command intents, desired workloads and the decision log.

Every write is its own committed transaction, so an intent returned by
``begin_intent`` is on disk before the command it announces is sent.  The file,
its schema and its wall-time text are scheduler.store.sqlite's.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.core.model import OutcomeStatus, Workload
from scheduler.store.sqlite import Database, StoreError, from_text, to_text

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


class Store(Database):
    """The loop's journal: decisions, intents and desired workloads (``Store.open(path)``)."""

    def record_decisions(self, at: datetime, decisions: Sequence[DecisionRecord]) -> None:
        """Append many decisions and set each device's desired workload, in one transaction.

        The same desired rows as set_desired() one by one, written with one
        statement each (a fleet-wide change: 10,000 rows at once).
        """
        if not decisions:
            return
        text = to_text(at)
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
        text = to_text(at)
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
                (to_text(at), device_id, str(workload), reason),
            )
            return int(cursor.lastrowid or 0)

    def finish_intent(
        self, intent_id: int, *, at: datetime, status: OutcomeStatus | str, detail: str
    ) -> None:
        """Record how a command ended (an OutcomeStatus value); each intent finishes once."""
        outcome = OutcomeStatus(status)
        finished_at = to_text(at)
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
                        (to_text(at), OutcomeStatus(status).value, detail, intent_id)
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
                at=from_text(row["at"]),
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
                (device_id, str(workload), reason, to_text(at)),
            )

    def set_desired_many(self, rows: Sequence[tuple[str, Workload, str]], at: datetime) -> None:
        """set_desired() for many (device id, workload, reason) rows in one transaction."""
        if not rows:
            return
        text = to_text(at)
        with self._write() as db:
            db.executemany(
                "INSERT INTO desired (device_id, workload, reason, at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (device_id) DO UPDATE SET"
                " workload = excluded.workload, reason = excluded.reason, at = excluded.at",
                ((device_id, str(workload), reason, text) for device_id, workload, reason in rows),
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
            filters.append(to_text(since))
        if until is not None:
            conditions.append("at < ?")
            filters.append(to_text(until))
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
            at=from_text(row["at"]),
            device_id=row["device_id"],
            workload=Workload.parse(row["workload"]),
            reason=row["reason"],
            outcome=outcome,
            detail=row["detail"],
            previous=None if row["previous"] is None else Workload.parse(row["previous"]),
            expected_margin_usd_per_hour=row["expected_margin_usd_per_hour"],
            finished_at=None if row["finished_at"] is None else from_text(row["finished_at"]),
        )
