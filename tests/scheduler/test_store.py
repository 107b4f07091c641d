"""Store: WAL, durable intents, desired state, audit log, reopen, and clear errors."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from scheduler.core.model import OutcomeStatus, Workload
from scheduler.store.journal import PENDING, AuditKind, DecisionRecord, Store
from scheduler.store.sqlite import SCHEMA_VERSION, StoreError

T0 = datetime(2024, 8, 20, 14, 30, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "wattmux.sqlite"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store.open(db_path) as opened:
        yield opened


def peek(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Read the file through a second, independent connection (sees only committed data)."""
    connection = sqlite3.connect(path)
    try:
        return list(connection.execute(sql, params).fetchall())
    finally:
        connection.close()


def test_open_creates_directory_enables_wal_and_full_sync(db_path: Path, store: Store) -> None:
    assert db_path.parent.is_dir()
    assert store.journal_mode == "wal"
    # WAL is persistent in the file: an independent connection sees it too.
    assert peek(db_path, "PRAGMA journal_mode") == [("wal",)]
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # 2 = FULL
    assert store.schema_version == SCHEMA_VERSION >= 1
    assert peek(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def test_memory_store_works_for_tests() -> None:
    with Store.open(":memory:") as store:
        store.set_desired("m1", Workload.sleep(), "price_above_breakeven", T0)
        assert store.desired() == {"m1": Workload.sleep()}


def test_decision_round_trip(store: Store) -> None:
    store.record_decisions(
        at(5),
        [
            DecisionRecord(
                "m1", Workload.sleep(), "price_above_breakeven", -0.42, Workload.mine("main")
            )
        ],
    )
    [record] = store.audit()
    assert record.kind is AuditKind.DECISION
    assert record.id == 1
    assert record.at == at(5)
    assert record.at.tzinfo is not None and record.at.utcoffset() == timedelta(0)
    assert record.device_id == "m1"
    assert record.workload == Workload.sleep()
    assert record.previous == Workload.mine("main")
    assert record.reason == "price_above_breakeven"
    assert record.expected_margin_usd_per_hour == pytest.approx(-0.42)
    assert record.outcome is None


def test_first_decision_has_no_previous(store: Store) -> None:
    store.record_decisions(
        T0, [DecisionRecord("m1", Workload.mine("main", 0.8), "price_below_breakeven", 1.5, None)]
    )
    [record] = store.audit()
    assert record.previous is None
    assert record.workload == Workload.mine("main", 0.8)


def test_intent_is_committed_before_finish(db_path: Path, store: Store) -> None:
    intent_id = store.begin_intent(at=at(1), device_id="m1", workload=Workload.sleep(), reason="dr")
    # Another connection already sees the intent, unfinished: it is on disk before the command.
    rows = peek(db_path, "SELECT id, device_id, workload, reason, finished_at, status FROM intents")
    assert rows == [(intent_id, "m1", "sleep", "dr", None, None)]
    [pending] = store.audit(kind="command")
    assert pending.outcome == PENDING

    store.finish_intent(intent_id, at=at(3), status=OutcomeStatus.CONFIRMED, detail="read back")
    rows = peek(db_path, "SELECT status, detail FROM intents WHERE id = ?", (intent_id,))
    assert rows == [("confirmed", "read back")]
    [record] = store.audit(kind="command")
    assert record.kind is AuditKind.COMMAND
    assert record.outcome == "confirmed"
    assert record.detail == "read back"
    assert record.at == at(1)
    assert record.finished_at == at(3)
    assert record.previous is None and record.expected_margin_usd_per_hour is None


def test_batched_intents_are_committed_in_order_with_their_ids(db_path: Path, store: Store) -> None:
    before = store.begin_intent(at=at(0), device_id="m0", workload=Workload.sleep(), reason="a")
    ids = store.begin_intents(
        at(1),
        [
            ("m1", Workload.sleep(), "price_above_breakeven"),
            ("m2", Workload.mine("main", 0.8), "price_below_breakeven"),
        ],
    )
    after = store.begin_intent(at=at(2), device_id="m3", workload=Workload.off(), reason="b")
    assert store.begin_intents(at(3), []) == []
    assert before < ids[0] < ids[1] < after
    rows = peek(db_path, "SELECT id, device_id, workload, reason FROM intents ORDER BY seq")
    assert rows == [
        (before, "m0", "sleep", "a"),
        (ids[0], "m1", "sleep", "price_above_breakeven"),
        (ids[1], "m2", "mine(main,0.8)", "price_below_breakeven"),
        (after, "m3", "off", "b"),
    ]
    store.finish_intent(ids[1], at=at(4), status="confirmed", detail="read back")
    assert [i.id for i in store.open_intents()] == [before, ids[0], after]


def test_batched_decisions_set_desired_and_read_back(store: Store) -> None:
    store.record_decisions(at(0), [DecisionRecord("m9", Workload.sleep(), "thermal", 0.0, None)])
    store.record_decisions(
        at(5),
        [
            DecisionRecord("m1", Workload.sleep(), "dr_event", -0.5, Workload.mine("main")),
            DecisionRecord("m2", Workload.mine("main"), "price_below_breakeven", 1.25, None),
        ],
    )
    store.record_decisions(at(6), [])
    newest, second, oldest = store.audit(kind="decision")
    assert (oldest.device_id, second.device_id, newest.device_id) == ("m9", "m1", "m2")
    assert second.at == at(5) and second.previous == Workload.mine("main")
    assert second.reason == "dr_event" and second.expected_margin_usd_per_hour == -0.5
    assert newest.previous is None and newest.workload == Workload.mine("main")
    assert store.desired() == {
        "m1": Workload.sleep(),
        "m2": Workload.mine("main"),
        "m9": Workload.sleep(),
    }
    store.record_decisions(
        at(7), [DecisionRecord("m1", Workload.mine("main"), "price_below_breakeven", 1.0, None)]
    )
    assert store.desired()["m1"] == Workload.mine("main")


def test_open_intents_lists_only_unfinished_oldest_first(store: Store) -> None:
    first = store.begin_intent(at=at(1), device_id="m1", workload=Workload.sleep(), reason="a")
    done = store.begin_intent(at=at(2), device_id="m2", workload=Workload.off(), reason="b")
    third = store.begin_intent(at=at(3), device_id="m3", workload=Workload.ai("q1"), reason="c")
    store.finish_intent(done, at=at(4), status="rejected", detail="access denied")
    intents = store.open_intents()
    assert [i.id for i in intents] == [first, third]
    assert intents[0].device_id == "m1" and intents[0].workload == Workload.sleep()
    assert intents[1].workload == Workload.ai("q1")
    assert intents[1].at == at(3) and intents[1].reason == "c"


def test_finish_intent_rejects_unknown_repeated_and_bad_status(store: Store) -> None:
    intent_id = store.begin_intent(at=T0, device_id="m1", workload=Workload.sleep(), reason="r")
    with pytest.raises(ValueError):
        store.finish_intent(intent_id, at=T0, status="exploded", detail="")
    store.finish_intent(intent_id, at=T0, status="unconfirmed", detail="no read-back")
    with pytest.raises(StoreError, match="already finished"):
        store.finish_intent(intent_id, at=T0, status="confirmed", detail="")
    with pytest.raises(StoreError, match="does not exist"):
        store.finish_intent(intent_id + 100, at=T0, status="confirmed", detail="")
    # the failed attempts changed nothing
    [record] = store.audit()
    assert record.outcome == "unconfirmed" and record.detail == "no read-back"


@pytest.mark.parametrize(
    "workload",
    [
        Workload.mine("main"),
        Workload.mine("backup", 0.75),
        Workload.ai("inference-a"),
        Workload.sleep(),
        Workload.off(),
    ],
    ids=str,
)
def test_desired_round_trips_every_workload_kind(store: Store, workload: Workload) -> None:
    store.set_desired("m1", workload, "test", T0)
    assert store.desired() == {"m1": workload}


def test_set_desired_replaces_previous_value(store: Store) -> None:
    store.set_desired("m1", Workload.mine("main"), "price_below_breakeven", at(0))
    store.set_desired("m2", Workload.sleep(), "price_above_breakeven", at(0))
    store.set_desired("m1", Workload.sleep(), "dr_event", at(10))
    assert store.desired() == {"m1": Workload.sleep(), "m2": Workload.sleep()}


def test_everything_survives_reopen(db_path: Path) -> None:
    with Store.open(db_path) as store:
        store.set_desired("m1", Workload.mine("main", 0.9), "price_below_breakeven", T0)
        store.record_decisions(
            T0,
            [
                DecisionRecord(
                    "m1", Workload.mine("main", 0.9), "price_below_breakeven", 2.0, Workload.sleep()
                )
            ],
        )
        open_id = store.begin_intent(
            at=at(1), device_id="m1", workload=Workload.mine("main", 0.9), reason="x"
        )
    with Store.open(db_path) as reopened:
        assert reopened.schema_version == SCHEMA_VERSION
        assert reopened.desired() == {"m1": Workload.mine("main", 0.9)}
        assert [i.id for i in reopened.open_intents()] == [open_id]
        assert [r.kind for r in reopened.audit()] == [AuditKind.COMMAND, AuditKind.DECISION]
        reopened.finish_intent(open_id, at=at(2), status="confirmed", detail="")
        assert reopened.open_intents() == []


def test_audit_newest_first_with_filters_and_limit(store: Store) -> None:
    store.record_decisions(
        at(10), [DecisionRecord("m1", Workload.sleep(), "price_above_breakeven", 0.0, None)]
    )
    # same wall time as the decision, written after it: newer
    command = store.begin_intent(
        at=at(10), device_id="m1", workload=Workload.sleep(), reason="price_above_breakeven"
    )
    store.begin_intent(at=at(20), device_id="m2", workload=Workload.off(), reason="thermal")
    store.record_decisions(at(5), [DecisionRecord("m2", Workload.off(), "thermal", 0.0, None)])
    everything = store.audit()
    assert [(r.at, r.kind, r.device_id) for r in everything] == [
        (at(20), AuditKind.COMMAND, "m2"),
        (at(10), AuditKind.COMMAND, "m1"),
        (at(10), AuditKind.DECISION, "m1"),
        (at(5), AuditKind.DECISION, "m2"),
    ]
    assert everything[1].id == command
    assert [r.device_id for r in store.audit(device_id="m1")] == ["m1", "m1"]
    assert [r.at for r in store.audit(kind="decision")] == [at(10), at(5)]
    assert [(r.kind, r.device_id) for r in store.audit(kind="command", device_id="m2")] == [
        (AuditKind.COMMAND, "m2")
    ]
    assert [r.at for r in store.audit(limit=2)] == [at(20), at(10)]
    assert store.audit(device_id="nope") == []
    with pytest.raises(ValueError):
        store.audit(kind="gossip")


def test_wall_times_are_normalised_to_utc_and_naive_ones_refused(store: Store) -> None:
    local = datetime(2024, 8, 20, 9, 30, tzinfo=timezone(timedelta(hours=-5)))
    store.begin_intent(at=local, device_id="m1", workload=Workload.sleep(), reason="r")
    [record] = store.audit()
    assert record.at == local
    assert record.at.utcoffset() == timedelta(0)
    assert record.at.hour == 14
    with pytest.raises(ValueError, match="tz-aware"):
        store.begin_intent(
            at=datetime(2024, 8, 20, 9, 30), device_id="m1", workload=Workload.sleep(), reason="r"
        )


def test_directory_that_cannot_be_created_raises_store_error_naming_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the directory should be")
    target = blocker / "wattmux.sqlite"
    with pytest.raises(StoreError) as info:
        Store.open(target)
    assert str(target) in str(info.value)
    assert info.value.path == str(target)


def test_path_that_is_a_directory_raises_store_error_naming_path(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        Store.open(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_file_that_is_not_a_database_raises_store_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not an SQLite database, not even close" * 100)
    with pytest.raises(StoreError, match=re.escape(str(garbage))):
        Store.open(garbage)


def test_newer_schema_is_refused(db_path: Path) -> None:
    Store.open(db_path).close()
    connection = sqlite3.connect(db_path)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.commit()
    connection.close()
    with pytest.raises(StoreError, match="newer"):
        Store.open(db_path)


def test_closed_store_raises_store_error(db_path: Path) -> None:
    store = Store.open(db_path)
    store.close()
    with pytest.raises(StoreError, match=re.escape(str(db_path))):
        store.desired()
    with pytest.raises(StoreError):
        store.set_desired("m1", Workload.sleep(), "r", T0)


def test_batched_intent_ends_are_all_or_nothing(db_path: Path, store: Store) -> None:
    ids = store.begin_intents(at(1), [("m1", Workload.sleep(), "a"), ("m2", Workload.sleep(), "a")])
    store.finish_intents([(ids[0], at(2), OutcomeStatus.CONFIRMED, "read back")])
    with pytest.raises(StoreError, match=f"intent {ids[0]} already finished"):
        store.finish_intents(
            [
                (ids[1], at(3), OutcomeStatus.UNCONFIRMED, "x"),
                (ids[0], at(3), OutcomeStatus.CONFIRMED, "again"),
            ]
        )
    with pytest.raises(StoreError, match=f"intent {ids[1]} already finished"):
        store.finish_intents(
            [
                (ids[1], at(3), OutcomeStatus.REJECTED, "x"),
                (ids[1], at(4), OutcomeStatus.REJECTED, "y"),
            ]
        )
    with pytest.raises(StoreError, match="intent 999 does not exist"):
        store.finish_intents([(999, at(3), OutcomeStatus.CONFIRMED, "x")])
    # Nothing of the refused batches was written: the second intent is still open.
    assert [i.id for i in store.open_intents()] == [ids[1]]
    store.finish_intents([(ids[1], at(5), OutcomeStatus.UNAVAILABLE, "no reply")])
    rows = peek(db_path, "SELECT id, status, detail FROM intents ORDER BY id")
    assert rows == [(ids[0], "confirmed", "read back"), (ids[1], "unavailable", "no reply")]
