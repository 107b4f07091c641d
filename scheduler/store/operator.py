"""The operator's durable state in SQLite: overrides, settings and the API audit log.

Every change made through the API is committed in one transaction with its
audit row, so an acknowledged change is never without its record.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from scheduler.core.model import Workload
from scheduler.store.journal import Store
from scheduler.store.prices import PriceStore
from scheduler.store.sqlite import StoreError, from_text, to_text

log = logging.getLogger(__name__)


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
            to_text(entry.at),
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


class ControlStore(Store, PriceStore):
    """The Store plus operator state (overrides, settings) and the API audit log.

    Every change made through the API is committed in one transaction with
    its audit row, so an acknowledged change is never without its record.
    """

    def record_api_audit(self, entry: ApiAuditEntry) -> int:
        """Durably append an audit row for a request that changed nothing (denied, invalid)."""
        with self._write() as db:
            return _insert_api_audit(db, entry)

    def update_api_audit_result(self, row_id: int, result: str) -> None:
        """Rewrite the result of one audit row (the running count of an aggregated row)."""
        with self._write() as db:
            db.execute("UPDATE api_audit SET result = ? WHERE id = ?", (result, row_id))

    def prune_refused_audit(self, before: datetime) -> int:
        """Delete audit rows of refused requests (status >= 400) older than ``before``.

        Rows of changes (status below 400) are never deleted.  Returns how many went.
        """
        with self._write() as db:
            cursor = db.execute(
                "DELETE FROM api_audit WHERE status_code >= 400 AND at < ?", (to_text(before),)
            )
            return int(cursor.rowcount)

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
                    to_text(row.until),
                    row.note,
                    row.by,
                    to_text(row.at),
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

    def set_override_ends(self, ends: Sequence[tuple[str, datetime]]) -> None:
        """Move the end of existing overrides (device id, new until), in one transaction."""
        with self._write() as db:
            db.executemany(
                "UPDATE overrides SET until = ? WHERE device_id = ?",
                [(to_text(until), device_id) for device_id, until in ends],
            )

    def overrides(self) -> list[OverrideRow]:
        """Every stored override, by device id."""
        rows = self._read(
            "SELECT device_id, workload, until, note, by, at FROM overrides ORDER BY device_id"
        )
        return [
            OverrideRow(
                device_id=row["device_id"],
                workload=Workload.parse(row["workload"]),
                until=from_text(row["until"]),
                note=row["note"],
                by=row["by"],
                at=from_text(row["at"]),
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
                    (key, value, to_text(at)),
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
                at=from_text(row["at"]),
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


class RefusedAuditRetention:
    """A tick listener that deletes old refused-request audit rows, at most once an hour.

    Refused requests are rate-limited and aggregated per client address, but an
    address that keeps knocking still adds rows for as long as it does: past
    ``[store] refused_audit_days`` they go.  A store error is logged and retried
    at the next hour, never raised into the loop.
    """

    def __init__(
        self,
        store: ControlStore,
        days: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        every_seconds: float = 3600.0,
    ) -> None:
        self.store = store
        self.days = days
        self.clock = clock
        self.wall_clock = wall_clock
        self.every_seconds = every_seconds
        self._last: float | None = None

    def __call__(self, _tick: int) -> None:
        """After a tick: prune when the last pruning is an hour old."""
        now = self.clock()
        if self.days <= 0 or (self._last is not None and now - self._last < self.every_seconds):
            return
        self._last = now
        before = self.wall_clock() - timedelta(days=self.days)
        try:
            deleted = self.store.prune_refused_audit(before)
        except StoreError as exc:
            log.error("cannot delete old refused-request audit rows: %s", exc)
            return
        if deleted:
            log.info("deleted %d refused-request audit rows older than %g days", deleted, self.days)
