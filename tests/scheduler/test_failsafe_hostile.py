"""``wattmux failsafe`` cannot be taken down by what it controls: hostile miners and driver bugs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from drivers.sim.hostile import Behaviour, HostileMiner
from drivers.sim.site import SimSite
from scheduler.config.devices import pools_of
from scheduler.config.loading import load_config
from scheduler.control import failsafe
from scheduler.core.model import Device, Outcome, Workload
from tests.deploy.sim_daemon import free_port_on
from tests.scheduler.test_failsafe import run_failsafe_cli

pytestmark = pytest.mark.system

HOSTILE = {
    "bad-deep": ("127.91.4.20", Behaviour.DEEP),
    "bad-int": ("127.91.4.21", Behaviour.HUGE_INTEGER),
}


def write_config(tmp_path: Path, port: int, subnet: int) -> Path:
    options = (
        f"{{ port = {port}, timeout_seconds = 0.5, confirm_timeout_seconds = 2.0, "
        "confirm_interval_seconds = 0.05 }"
    )
    hostile = "".join(
        f"""
[[devices]]
id = "{name}"
model = "S21"
address = "{address}"
pools = ["main"]
options = {options}
"""
        for name, (address, _) in HOSTILE.items()
    )
    path = tmp_path / "wattmux.toml"
    path.write_text(
        f"""
[site]
name = "failsafe"
power_cap_kw = 100.0

[store]
path = "{tmp_path / "store.sqlite"}"

[[pools]]
name = "main"
url = "stratum+tcp://main.pool.invalid:3333"
user = "w"

[[device_ranges]]
id_prefix = "s21"
model = "S21"
first_address = "127.91.{subnet}.1"
count = 3
pools = ["main"]
options = {options}
{hostile}"""
    )
    return path


@pytest.mark.system
async def test_cli_failsafe_sleeps_the_good_miners_and_reports_the_hostile_ones(
    tmp_path: Path,
) -> None:
    port = free_port_on("127.91.4.1")
    path = write_config(tmp_path, port, 4)
    config = load_config(path)
    good = [d for d in config.all_devices() if d.id.startswith("s21")]
    hostile = [HostileMiner(address, behaviour, port) for address, behaviour in HOSTILE.values()]
    async with SimSite(good, list(pools_of(config).values()), port=port) as site:
        for miner in hostile:
            await miner.start()
        try:
            returncode, out, err = await run_failsafe_cli(path)
            assert all(m.asleep for m in site.miners.values())
        finally:
            for miner in hostile:
                await miner.stop()
    assert returncode != 0
    assert "3 of 5 devices confirmed asleep" in out
    reported = [line.split(":")[0] for line in err.splitlines() if ": unavailable: " in line]
    assert sorted(reported) == ["bad-deep", "bad-int"]


async def test_a_driver_bug_fails_only_its_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port_on("127.91.5.1")
    config = load_config(write_config(tmp_path, port, 5))
    good = [d for d in config.all_devices() if d.id.startswith("s21")]
    real = failsafe.create_asic_driver

    class Buggy:
        def __init__(self, driver: Any) -> None:
            self.driver = driver

        async def apply(self, device: Device, workload: Workload) -> Outcome:
            if device.id == "s21-002":
                raise RecursionError("bug in a parser")
            return await self.driver.apply(device, workload)  # type: ignore[no-any-return]

    def create(*args: Any, **kwargs: Any) -> Any:
        return Buggy(real(*args, **kwargs))

    monkeypatch.setattr(failsafe, "create_asic_driver", create)
    async with SimSite(good, list(pools_of(config).values()), port=port) as site:
        report = await failsafe.curtail_all(config)
        assert site.miners["s21-001"].asleep and site.miners["s21-003"].asleep
        assert not site.miners["s21-002"].asleep
    failed = {o.device_id: o.detail for o in report.failed}
    assert set(failed) == {"s21-002", "bad-deep", "bad-int"}  # nothing serves the bad ones here
    assert "RecursionError" in (failed["s21-002"] or "")
