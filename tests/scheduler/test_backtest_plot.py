"""The backtest PNG: its margin panel shows the gain over always-on, and matplotlib stays quiet."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from datetime import date
from pathlib import Path

import pytest

from scheduler.backtest.engine import load_trace, run_backtest
from scheduler.backtest.plot import build_figure, gain_over_always_on
from scheduler.config.loading import load_config
from scheduler.policies.max_margin import MaxMarginPolicy
from tests.scheduler.test_backtest import BTC, FLEETS, PRICES, ROOT

matplotlib = pytest.importorskip("matplotlib", reason="the plot extra is not installed")


def test_the_plot_extra_is_declared_and_pinned() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(req.startswith("matplotlib") for req in extras["plot"])
    pins = (ROOT / "constraints.txt").read_text().splitlines()
    assert any(line.startswith("matplotlib==") for line in pins)


@pytest.mark.system  # matplotlib may run fc-list to build its font cache
def test_the_margin_panel_draws_the_gain_over_always_on() -> None:
    config = load_config(FLEETS / "s21.toml")
    trace = load_trace(PRICES, BTC, date(2024, 8, 19), date(2024, 8, 21))
    report = run_backtest(config, MaxMarginPolicy(), trace, info="lagged")
    gains = gain_over_always_on(report)
    policy_gain = [
        p - a
        for p, a in zip(
            report.policy.margin_series_usd, report.always_on.margin_series_usd, strict=True
        )
    ]
    assert gains["max-margin"] == pytest.approx(policy_gain)
    assert gains["max-margin"][-1] > 0  # the spike days: sleeping pays
    figure = build_figure(report)
    try:
        margin_ax = figure.axes[2]
        assert "over" in margin_ax.get_ylabel() and "always-on" in margin_ax.get_ylabel()
        lines = {line.get_label().split(":")[0]: line for line in margin_ax.get_lines()}
        assert list(lines["max-margin"].get_ydata()) == pytest.approx(policy_gain)
        # no cumulative margin is drawn (their lines lie on top of each other): only gains
        drawn = [list(line.get_ydata()) for line in margin_ax.get_lines()]
        for result in (report.always_on, report.policy, report.naive, report.optimum):
            assert result.margin_series_usd not in drawn
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)


@pytest.mark.system
def test_no_matplotlib_info_line_in_the_backtest_output(tmp_path: Path) -> None:
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}  # a cold font cache
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scheduler.cli.main",
            "backtest",
            "--fleet",
            str(FLEETS / "s21.toml"),
            "--start",
            "2024-08-20",
            "--end",
            "2024-08-20",
            "--quiet",
            "--plot",
            str(tmp_path / "out.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "matplotlib" not in result.stderr, result.stderr
