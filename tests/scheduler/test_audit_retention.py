"""Refused-request audit rows are deleted past ``[store] refused_audit_days``; changes stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from scheduler.config.schema import StoreConfig
from scheduler.store.operator import ApiAuditEntry, ControlStore, RefusedAuditRetention
from tests.fakes import FakeClock

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def entry(at: datetime, status: int, path: str) -> ApiAuditEntry:
    return ApiAuditEntry(
        at=at,
        principal="anonymous" if status >= 400 else "ops",
        role="none" if status >= 400 else "operator",
        remote="127.0.0.1",
        method="PUT",
        path=path,
        before="null",
        after="null",
        result="rejected" if status >= 400 else "ok",
        status_code=status,
    )


def paths(store: ControlStore) -> list[str]:
    return sorted(r.path for r in store.api_audit(limit=100))


def test_old_refused_rows_go_changes_and_recent_refusals_stay(tmp_path: Path) -> None:
    with ControlStore.open(tmp_path / "s.sqlite") as store:
        store.record_api_audit(entry(NOW - timedelta(days=40), 429, "/old-refused"))
        store.record_api_audit(entry(NOW - timedelta(days=40), 401, "/old-unauthorized"))
        store.record_api_audit(entry(NOW - timedelta(days=40), 200, "/old-change"))
        store.record_api_audit(entry(NOW - timedelta(days=2), 403, "/recent-refused"))
        assert store.prune_refused_audit(NOW - timedelta(days=30)) == 2
        assert paths(store) == ["/old-change", "/recent-refused"]


def test_the_listener_prunes_at_most_once_an_hour_and_never_with_zero_days(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    wall = [NOW]
    with ControlStore.open(tmp_path / "s.sqlite") as store:
        retention = RefusedAuditRetention(store, 30, clock=clock, wall_clock=lambda: wall[0])
        store.record_api_audit(entry(NOW - timedelta(days=31), 429, "/a"))
        retention(1)
        assert paths(store) == []
        store.record_api_audit(entry(NOW - timedelta(days=31), 429, "/b"))
        clock.advance(3599)
        retention(2)
        assert paths(store) == ["/b"]  # not yet an hour
        clock.advance(1)
        retention(3)
        assert paths(store) == []
        store.record_api_audit(entry(NOW - timedelta(days=3650), 429, "/kept"))
        RefusedAuditRetention(store, 0, clock=clock, wall_clock=lambda: wall[0])(4)
        assert paths(store) == ["/kept"]


def test_the_default_retention_is_thirty_days() -> None:
    assert StoreConfig().refused_audit_days == 30
