"""``wattmux backtest``: arguments, progress on stderr, JSON and PNG output."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from importlib import resources
from typing import TextIO

from drivers.errors import DriverError
from scheduler.backtest.awards import (
    AwardReport,
    load_award_prices,
    priced_positions,
    settle_award,
)
from scheduler.backtest.bounds import lagged_bounds
from scheduler.backtest.engine import (
    DEFAULT_FEE_FRACTION,
    INFO_MODELS,
    BacktestError,
    BacktestReport,
    SwitchingCosts,
    load_trace,
    run_backtest,
)
from scheduler.backtest.four_cp import FourCpReport, check_in_trace, load_4cp_csv, settle_4cp
from scheduler.backtest.plot import PlotUnavailableError, write_plot
from scheduler.config.loading import ConfigError, load_config
from scheduler.policies import UnknownPolicyError, create_policy

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
BUNDLED_PRICES = "ercot_hb_south_15min_2024-06-01_2025-03-27.csv"
BUNDLED_BTC = "btc_daily_price_difficulty_2017-08-17_2025-06-02.csv"


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {value!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the backtest options to a subparser."""
    parser.add_argument("--fleet", required=True, metavar="FLEET.toml", help="wattmux config file")
    parser.add_argument(
        "--prices",
        metavar="PRICES.csv",
        default=None,
        help="ERCOT 15-minute CSV (default: the bundled HB_SOUTH 2024-06-01..2025-03-27 record)",
    )
    parser.add_argument(
        "--btc",
        metavar="BTC.csv",
        default=None,
        help="BTC daily CSV (default: the bundled 2017-08-17..2025-06-02 record)",
    )
    parser.add_argument("--policy", default=None, help="policy name (default: the config's)")
    parser.add_argument(
        "--info",
        choices=INFO_MODELS,
        default="lagged",
        help="lagged: a decision sees real-time prices up to t-1; realtime: also t; sced5: also t, "
        "acting 5 minutes into t (the first 5 minutes on the previous decision; the 15-minute "
        "price is taken as flat within the interval) (default lagged)",
    )
    parser.add_argument(
        "--start", type=_date, default=None, metavar="DATE", help="first local date"
    )
    parser.add_argument("--end", type=_date, default=None, metavar="DATE", help="last local date")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the JSON report here")
    parser.add_argument(
        "--plot", default=None, metavar="OUT.png", help="write a PNG (needs [plot])"
    )
    parser.add_argument(
        "--wake-seconds",
        type=float,
        default=300.0,
        help="warm-up after sleep: seconds at full power without revenue (default 300)",
    )
    parser.add_argument(
        "--switch-cost-usd",
        type=float,
        default=0.0,
        help="cost of each workload change (default 0)",
    )
    parser.add_argument(
        "--fee-fraction",
        type=float,
        default=DEFAULT_FEE_FRACTION,
        help="transaction fees per block as a share of the subsidy, used where the BTC file "
        f"has no fees_btc_per_block column (default {DEFAULT_FEE_FRACTION:g})",
    )
    parser.add_argument(
        "--bounds",
        action="store_true",
        help="add lagged_bounds: what decisions on lagged information can capture at best",
    )
    parser.add_argument(
        "--4cp-rate",
        dest="four_cp_rate",
        type=float,
        default=None,
        metavar="USD_PER_KW_YEAR",
        help="ERCOT 4CP transmission rate: settle each strategy's 4CP tag (needs --4cp-intervals)",
    )
    parser.add_argument(
        "--4cp-intervals",
        dest="four_cp_intervals",
        default=None,
        metavar="CP.csv",
        help="CSV of the 4CP interval starts (column interval_start, ISO 8601 with offset)",
    )
    parser.add_argument(
        "--award-mw",
        dest="award_mw",
        type=float,
        default=None,
        metavar="MW",
        help="an ancillary-service award held as running curtailable load (needs --award-prices)",
    )
    parser.add_argument(
        "--award-prices",
        dest="award_prices",
        default=None,
        metavar="AWARD.csv",
        help="CSV of the award window: interval_start (ISO 8601 with offset), usd_per_mw_h",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


class _Progress:
    """Progress on stderr: a rewritten line on a terminal, a line per 10% otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.last_decile = -1

    def __call__(self, done: int, total: int) -> None:
        percent = 100 * done // total
        elapsed = time.monotonic() - self.started
        text = f"backtest: {percent:3d}% ({done:,}/{total:,} intervals, {elapsed:.1f} s)"
        if self.stream.isatty():
            self.stream.write("\r" + text + ("\n" if done == total else ""))
        elif percent // 10 != self.last_decile:
            self.last_decile = percent // 10
            self.stream.write(text + "\n")
        self.stream.flush()


def _summary(report: BacktestReport) -> list[str]:
    document = report.as_dict()
    lines = [f"{'strategy':<16} {'margin_usd':>14} {'switches':>9} {'curtailed_mwh':>14}"]
    for name, values in document["strategies"].items():
        label = report.policy_name if name == "policy" else name
        lines.append(
            f"{label:<16} {values['margin_usd']:>14,.2f} {values['switches']:>9,} "
            f"{values['energy_curtailed_mwh']:>14,.3f}"
        )
    lines.append(f"curtailment_value_captured: {document['curtailment_value_captured']}")
    return lines


def _four_cp_summary(four_cp: FourCpReport) -> list[str]:
    lines = [f"{'4cp':<16} {'tag_kw':>14} {'charge_usd':>14} {'savings_usd':>14}"]
    for name, s in four_cp.strategies.items():
        lines.append(
            f"{name:<16} {s.tag_kw:>14,.1f} {s.charge_usd:>14,.2f} {s.savings_usd:>14,.2f}"
        )
    return lines


def _award_summary(award: AwardReport) -> list[str]:
    lines = [f"{'award':<16} {'capacity_usd':>14} {'forgone_usd':>14} {'margin_w_award':>14}"]
    for name, s in award.strategies.items():
        lines.append(
            f"{name:<16} {s.capacity_revenue_usd:>14,.2f} {s.energy_forgone_usd:>14,.2f} "
            f"{s.margin_with_award_usd:>14,.2f}"
        )
    return lines


def run_backtest_command(args: argparse.Namespace) -> int:
    """Run ``wattmux backtest`` with parsed arguments; return the exit status."""
    try:
        config = load_config(args.fleet)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    policy_config = config.policy
    if args.policy is not None:
        policy_config = policy_config.model_copy(update={"name": args.policy})
    # The policy is told the switching costs the backtest charges (its settings of the same name).
    costs_update = {"wake_seconds": args.wake_seconds, "switch_cost_usd": args.switch_cost_usd}
    policy_config = policy_config.model_copy(
        update={
            **costs_update,
            "options": {
                name: {**table, **costs_update} if name == policy_config.name else table
                for name, table in policy_config.options.items()
            },
        }
    )
    data = resources.files("drivers.market").joinpath("data")
    if (args.award_mw is None) != (args.award_prices is None):
        print("wattmux backtest: --award-mw and --award-prices go together", file=sys.stderr)
        return EXIT_CONFIG
    if (args.four_cp_rate is None) != (args.four_cp_intervals is None):
        print("wattmux backtest: --4cp-rate and --4cp-intervals go together", file=sys.stderr)
        return EXIT_CONFIG
    try:
        four_cp_intervals = (
            load_4cp_csv(args.four_cp_intervals) if args.four_cp_intervals is not None else None
        )
        policy = create_policy(policy_config)
        costs = SwitchingCosts(args.wake_seconds, args.switch_cost_usd)
        trace = load_trace(
            args.prices or data.joinpath(BUNDLED_PRICES),
            args.btc or data.joinpath(BUNDLED_BTC),
            args.start,
            args.end,
            fee_fraction=args.fee_fraction,
        )
        if four_cp_intervals is not None:
            check_in_trace(trace, four_cp_intervals)  # before the run, not after
        award_prices = load_award_prices(args.award_prices) if args.award_prices else None
        if award_prices is not None:
            priced_positions(trace, award_prices)  # before the run, not after
    except (UnknownPolicyError, BacktestError) as exc:
        print(f"wattmux backtest: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except DriverError as exc:
        print(f"wattmux backtest: {exc.source}: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    progress = None if args.quiet else _Progress(sys.stderr)
    report = run_backtest(config, policy, trace, info=args.info, costs=costs, progress=progress)
    document = report.as_dict()
    if args.bounds:
        document["lagged_bounds"] = lagged_bounds(config, trace, costs)
    four_cp = None
    if four_cp_intervals is not None:
        try:
            four_cp = settle_4cp(report, four_cp_intervals, args.four_cp_rate)
        except BacktestError as exc:
            print(f"wattmux backtest: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        document["four_cp"] = four_cp.as_dict()
    award = None
    if award_prices is not None:
        try:
            award = settle_award(report, args.award_mw, award_prices)
        except BacktestError as exc:
            print(f"wattmux backtest: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        document["award"] = award.as_dict()
    text = json.dumps(document, indent=2)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            out.write(text + "\n")
        for line in (
            _summary(report)
            + (_four_cp_summary(four_cp) if four_cp else [])
            + (_award_summary(award) if award else [])
        ):
            print(line)
        for model, bounds in document.get("lagged_bounds", {}).items():
            print(f"lagged_bounds {model}: {json.dumps(bounds)}")
    else:
        print(text)
    if args.plot:
        try:
            write_plot(report, args.plot)
        except PlotUnavailableError as exc:
            print(f"wattmux backtest: {exc}", file=sys.stderr)
            return EXIT_FAILURE
    return EXIT_OK
