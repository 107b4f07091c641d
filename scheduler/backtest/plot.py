"""The PNG of a backtest: price and break-even, site power, cumulative gain over always-on (needs matplotlib)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from scheduler.backtest.engine import BacktestReport


class PlotUnavailableError(RuntimeError):
    """matplotlib is not installed (``pip install 'wattmux[plot]'``)."""


def gain_over_always_on(report: BacktestReport) -> dict[str, list[float]]:
    """Cumulative margin minus always-on's, per strategy (USD): what each gains by sleeping.

    The cumulative margins themselves are nearly equal lines on a site that mines most of
    the time; their differences from always-on are what the policy is for.
    """
    base = report.always_on.margin_series_usd
    out: dict[str, list[float]] = {}
    for result in (report.policy, report.naive, report.optimum):
        label = report.policy_name if result is report.policy else result.name
        out[label] = [m - b for m, b in zip(result.margin_series_usd, base, strict=True)]
    return out


def build_figure(report: BacktestReport) -> Any:
    """The matplotlib figure of write_plot (price, site power, gain over always-on)."""
    plt = _pyplot()
    times = [interval.start for interval in report.trace.intervals]
    figure, (price_ax, power_ax, margin_ax) = plt.subplots(3, 1, figsize=(12, 9), sharex=True)
    price_ax.plot(
        times, [i.rtm_usd_per_mwh for i in report.trace.intervals], lw=0.6, label="real-time price"
    )
    for model, series in report.breakeven_series.items():
        price_ax.plot(times, series, lw=1.0, ls="--", label=f"break-even {model}")
    price_ax.set_yscale("symlog", linthresh=100)
    price_ax.set_ylabel("USD/MWh")
    price_ax.legend(loc="upper left", fontsize=8)
    power_ax.plot(
        times, report.policy.power_series_kw, lw=0.6, label=f"{report.policy_name} site power"
    )
    power_ax.set_ylabel("kW")
    power_ax.legend(loc="upper left", fontsize=8)
    margin_ax.axhline(0.0, color="grey", lw=0.8, label=f"{report.always_on.name} (0)")
    for label, gains in gain_over_always_on(report).items():
        final = gains[-1] if gains else 0.0
        margin_ax.plot(times, gains, lw=1.2, label=f"{label}: {final:+,.0f} USD")
    margin_ax.set_ylabel("cumulative gain over\nalways-on, USD")
    margin_ax.legend(loc="upper left", fontsize=8)
    figure.suptitle(f"wattmux backtest: {report.policy_name}, info={report.info}")
    figure.tight_layout()
    return figure


def _pyplot() -> Any:
    try:
        import matplotlib

        # matplotlib logs its font cache build at INFO: not the operator's business
        logging.getLogger("matplotlib").setLevel(logging.WARNING)
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailableError(
            "--plot needs matplotlib, which is not installed: pip install 'wattmux[plot]'"
        ) from exc
    return plt


def write_plot(report: BacktestReport, path: str | Path) -> None:
    """PNG: price and break-even, site power, cumulative gain of the policy over always-on."""
    plt = _pyplot()
    figure = build_figure(report)
    figure.savefig(str(path), dpi=110)
    plt.close(figure)
