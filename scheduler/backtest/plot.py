"""The PNG of a backtest: price and break-even, site power, cumulative margin per strategy (needs matplotlib)."""

from __future__ import annotations

from pathlib import Path

from scheduler.backtest.engine import BacktestReport


class PlotUnavailableError(RuntimeError):
    """matplotlib is not installed (``pip install 'wattmux[plot]'``)."""


def write_plot(report: BacktestReport, path: str | Path) -> None:
    """PNG: price and break-even, site power, cumulative margin of the policy and baselines."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailableError(
            "--plot needs matplotlib, which is not installed: pip install 'wattmux[plot]'"
        ) from exc
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
    for result in (report.policy, report.always_on, report.naive, report.optimum):
        label = report.policy_name if result is report.policy else result.name
        margin_ax.plot(times, result.margin_series_usd, lw=1.0, label=label)
    margin_ax.set_ylabel("cumulative margin, USD")
    margin_ax.legend(loc="upper left", fontsize=8)
    figure.suptitle(f"wattmux backtest: {report.policy_name}, info={report.info}")
    figure.tight_layout()
    figure.savefig(str(path), dpi=110)
    plt.close(figure)
