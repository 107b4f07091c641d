"""The dead-man path: ``wattmux failsafe`` sleeps every simulated miner it can reach, over real TCP."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from drivers.sim.miner import Fault
from drivers.sim.site import SimSite
from scheduler.config.devices import pools_of
from scheduler.config.loading import load_config
from scheduler.control.failsafe import FAILSAFE_REASON, curtail_all
from scheduler.store.journal import Store
from tests.deploy.sim_daemon import free_port_on

pytestmark = pytest.mark.system


def write_config(tmp_path: Path, subnet: int, port: int, store: Path) -> Path:
    path = tmp_path / "wattmux.toml"
    path.write_text(
        f"""
[site]
name = "failsafe"
power_cap_kw = 100.0

[store]
path = "{store}"

[[pools]]
name = "main"
url = "stratum+tcp://main.pool.invalid:3333"
user = "w"

[[device_ranges]]
id_prefix = "s21"
model = "S21"
first_address = "127.80.{subnet}.1"
count = 4
pools = ["main"]
options = {{ port = {port}, timeout_seconds = 0.5, confirm_timeout_seconds = 2.0, confirm_interval_seconds = 0.05 }}
"""
    )
    return path


async def test_curtail_all_sleeps_reachable_miners_and_reports_the_rest(tmp_path: Path) -> None:
    port = free_port_on("127.80.5.1")
    config = load_config(write_config(tmp_path, 5, port, tmp_path / "store.sqlite"))
    async with SimSite(config.all_devices(), list(pools_of(config).values()), port=port) as site:
        miners = list(site.miners.values())
        miners[0].fault = Fault.CLOSE
        assert not any(m.asleep for m in miners)
        report = await curtail_all(config)
        assert all(m.asleep for m in miners[1:])
        assert not miners[0].asleep
    assert len(report.outcomes) == 4
    assert [o.device_id for o in report.failed] == ["s21-001"]
    with Store.open(tmp_path / "store.sqlite") as store:
        commands = store.audit(kind="command", limit=100)
        assert {(r.device_id, r.reason, r.outcome) for r in commands} == {
            ("s21-001", FAILSAFE_REASON, report.failed[0].status.value),
            ("s21-002", FAILSAFE_REASON, "confirmed"),
            ("s21-003", FAILSAFE_REASON, "confirmed"),
            ("s21-004", FAILSAFE_REASON, "confirmed"),
        }
        assert {str(w) for w in store.desired().values()} == {"sleep"}


async def run_failsafe_cli(config: Path) -> tuple[int, str, str]:
    """`wattmux failsafe --config` in its own process: exit status, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scheduler.cli.main",
        "failsafe",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.system
async def test_cli_failsafe_works_without_a_usable_store(tmp_path: Path) -> None:
    port = free_port_on("127.80.6.1")
    broken_store = tmp_path / "a-directory"
    broken_store.mkdir()  # a directory cannot be opened as the SQLite store
    path = write_config(tmp_path, 6, port, broken_store)
    config = load_config(path)
    async with SimSite(config.all_devices(), list(pools_of(config).values()), port=port) as site:
        returncode, out, err = await run_failsafe_cli(path)
        assert returncode == 0, err
        assert all(m.asleep for m in site.miners.values())
    assert "4 of 4 devices confirmed asleep" in out
    assert "without the store" in err


async def test_a_lost_sleep_command_is_sent_again(tmp_path: Path) -> None:
    """A miner that drops the first sleep (no answer, still mining) is commanded again."""
    port = free_port_on("127.80.7.1")
    config = load_config(write_config(tmp_path, 7, port, tmp_path / "store.sqlite"))
    control = config.control.model_copy(update={"failsafe_confirm_seconds": 0.3})
    config = config.model_copy(update={"control": control})
    resends: list[float] = []
    async with SimSite(config.all_devices(), list(pools_of(config).values()), port=port) as site:
        lossy = site.miners["s21-002"]
        lossy.fault, lossy.fault_commands = Fault.CLOSE, frozenset({"curtail"})

        async def pause(seconds: float) -> None:  # the failsafe waits before a resend
            resends.append(seconds)
            lossy.fault = None  # the next command gets through

        report = await curtail_all(config, pause=pause)
        assert all(m.asleep for m in site.miners.values())
    assert report.failed == ()
    assert len(resends) == 1
    with Store.open(tmp_path / "store.sqlite") as store:
        lossy_intents = [
            r for r in store.audit(kind="command", limit=100) if r.device_id == "s21-002"
        ]
    assert sorted(r.outcome for r in lossy_intents) == ["confirmed", "unconfirmed"]


async def test_a_miner_that_never_obeys_is_given_up_after_the_configured_attempts(
    tmp_path: Path,
) -> None:
    port = free_port_on("127.80.8.1")
    config = load_config(write_config(tmp_path, 8, port, tmp_path / "store.sqlite"))
    control = config.control.model_copy(
        update={"failsafe_confirm_seconds": 0.2, "failsafe_attempts": 2}
    )
    config = config.model_copy(update={"control": control})
    async with SimSite(config.all_devices(), list(pools_of(config).values()), port=port) as site:
        deaf = site.miners["s21-003"]
        deaf.fault, deaf.fault_commands = Fault.CLOSE, frozenset({"curtail"})
        seen: list[str] = []
        report = await curtail_all(config, on_outcome=lambda o: seen.append(o.device_id))
        assert not deaf.asleep
    assert sorted(seen) == ["s21-001", "s21-002", "s21-003", "s21-004"]  # progress, each once
    assert [o.device_id for o in report.failed] == ["s21-003"]
    assert "after 2 sleep commands" in report.failed[0].detail
