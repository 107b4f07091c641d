"""The scenario matrix (``make backtest-matrix``) on one short window: cells, goals, the page."""

from __future__ import annotations

from datetime import date

import pytest

from scheduler.backtest import matrix


@pytest.fixture
def one_day(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(matrix.WINDOWS, "spike", (date(2024, 8, 20), date(2024, 8, 20)))


@pytest.mark.usefixtures("one_day")
def test_cells_of_the_mixed_fleet_stay_within_the_cap() -> None:
    cells = matrix._cells("spike", 300.0, 0.0, "mixed 70 % cap")
    assert [c.info for c in cells] == ["realtime", "lagged", "sced5"]
    by_info = {c.info: c for c in cells}
    # lagged reuses the realtime optimum (the hindsight optimum does not depend on information).
    assert by_info["lagged"].optimum_usd == by_info["realtime"].optimum_usd
    assert by_info["sced5"].optimum_usd < by_info["realtime"].optimum_usd
    for cell in cells:
        assert cell.optimum_kind == "exact"
        assert cell.cap_violations == 0 and cell.baseline_violations == 0
        assert "over the cap" not in matrix.misses(cell)
        assert cell.optimum_usd >= max(cell.policy_usd, cell.naive_usd, cell.always_on_usd) - 1e-9


@pytest.mark.usefixtures("one_day")
def test_goals_are_named_where_missed_and_the_page_lists_them() -> None:
    (realtime, lagged, _) = matrix._cells("spike", 300.0, 0.0, "S21")
    assert realtime.policy_usd >= realtime.always_on_usd
    worse = matrix.Cell(
        **{**{f: getattr(realtime, f) for f in realtime.__dataclass_fields__}, "window": "whole"}
    )
    low = matrix.Cell(
        **{
            **{f: getattr(worse, f) for f in worse.__dataclass_fields__},
            "captured": 0.5,
            "policy_usd": realtime.naive_usd - 1.0,
        }
    )
    assert matrix.misses(low) == ["< naive", "capture < 0.99"]
    assert "< naive-lagged + 0.01" in matrix.misses(
        matrix.Cell(
            **{
                **{f: getattr(lagged, f) for f in lagged.__dataclass_fields__},
                "captured": 0.5,
                "naive_captured": 0.495,
            }
        )
    )
    page = matrix.render([realtime, low], "make backtest-matrix", 1.0)
    assert "1 of 2 cells meet every goal" in page
    assert "< naive, capture < 0.99" in page
    assert "Every optimum is exact" in page
    bound = matrix.Cell(
        **{**{f: getattr(low, f) for f in low.__dataclass_fields__}, "optimum_kind": "upper_bound"}
    )
    page = matrix.render([realtime, bound], "make backtest-matrix", 1.0)
    assert "(bound)" in page and "an upper bound" in page and "Every optimum" not in page
