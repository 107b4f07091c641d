"""Reports from a running daemon: GET /v1/reports (JSON, CSV) and ``wattmux report`` with --png."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.deploy.sim_daemon import SCRAPE_TOKEN, sim_daemon, wait_ticks

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[1]


async def test_reports_of_a_running_daemon(tmp_path: Path) -> None:
    async with sim_daemon(tmp_path, subnet=6) as sim:
        assert sim.daemon.accounting is not None and sim.daemon.loop is not None
        sim.daemon.accounting.interval_seconds = 0.0  # every tick of this fast loop
        await wait_ticks(sim, sim.daemon.loop.ticks + 8)
        today = datetime.now(UTC).date()  # the sim site's time zone is UTC
        span = {"from": (today - timedelta(days=1)).isoformat(), "to": today.isoformat()}
        async with httpx.AsyncClient(
            base_url=sim.base_url, headers=sim.headers, trust_env=False
        ) as api:
            answer = await api.get("/v1/reports", params=span)
            assert answer.status_code == 200, answer.text
            report = answer.json()
            rows = {r["device"]: r for r in report["rows"] if r["day"] == today.isoformat()}
            assert len(rows) == 12
            dead = rows["s19jpro-001"]  # the miner that closes every connection
            assert dead["uptime"] == 0.0 and dead["energy_kwh"] == 0.0
            alive = [r for r in rows.values() if r["device"] != "s19jpro-001"]
            assert all(r["energy_kwh"] > 0 for r in alive)
            assert all(r["up_hours"] + r["curtailed_hours"] > 0 for r in alive)
            day = report["days"][-1]
            assert day["day"] == today.isoformat()
            assert day["cumulative_gain_usd"] == pytest.approx(
                sum(d["gain_over_always_on_usd"] for d in report["days"]), abs=1e-3
            )

            answer = await api.get("/v1/reports", params={**span, "format": "csv"})
            assert answer.headers["content-type"].startswith("text/csv")
            table = list(csv.DictReader(io.StringIO(answer.text)))
            assert len(table) == len(report["rows"]) and "gain_over_always_on_usd" in table[0]

            bad = await api.get("/v1/reports", params={"from": "2026-02-01", "to": "2025-01-01"})
            assert bad.status_code == 422
            bad = await api.get("/v1/reports", params={"from": "2020-01-01", "to": "2026-01-01"})
            assert bad.status_code == 422 and "366" in bad.text

        png = tmp_path / "gain.png"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "scheduler.cli",
            "report",
            "--from",
            span["from"],
            "--to",
            span["to"],
            "--url",
            sim.base_url,
            "--png",
            str(png),
            env={**os.environ, "WATTMUX_TOKEN": SCRAPE_TOKEN},
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        lines = out.decode().splitlines()
        assert lines[0].split()[:3] == ["DAY", "UPTIME_%", "ENERGY_KWH"]
        assert lines[1].startswith(today.isoformat())
        assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        try:
            import matplotlib  # noqa: F401
        except ImportError:  # the plain chart, and one line that says so
            assert err.decode().count("\n") == 1 and "plain chart" in err.decode()
        else:  # the labelled chart, nothing on stderr
            assert err.decode() == "", err.decode()
            assert png.stat().st_size > 10_000
