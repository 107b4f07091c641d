"""Fakes shared by the tests: a clock the test moves by hand, and the devices they schedule."""

from __future__ import annotations

from scheduler.core.hardware import MODELS
from scheduler.core.model import TERA, Device, DeviceKind


class FakeClock:
    """A monotonic clock the test moves by hand; sleep() moves it instead of waiting."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def asic(
    device_id: str,
    model: str = "S21",
    *,
    driver: str = "cgminer",
    address: str = "127.0.0.1",
    port: int = 4028,
    pools: tuple[str, ...] = ("main",),
    hashrate_hs: float | None = None,
    power_w: float | None = None,
    sleep_power_w: float | None = None,
) -> Device:
    """An ASIC with its model's stock figures (scheduler.core.hardware) unless they are given."""
    facts = MODELS.get(model)
    if facts is not None:
        hashrate_hs = facts.hashrate_ths * TERA if hashrate_hs is None else hashrate_hs
        power_w = facts.power_w if power_w is None else power_w
        sleep_power_w = facts.sleep_power_w if sleep_power_w is None else sleep_power_w
    if hashrate_hs is None or power_w is None or sleep_power_w is None:
        raise KeyError(
            f"{model!r} has no stock figures: give hashrate_hs, power_w and sleep_power_w"
        )
    return Device(
        id=device_id,
        kind=DeviceKind.ASIC,
        model=model,
        driver=driver,
        address=address,
        port=port,
        nominal_hashrate_hs=hashrate_hs,
        nominal_power_w=power_w,
        sleep_power_w=sleep_power_w,
        pools=pools,
    )


def gpu_node(
    device_id: str = "g1",
    *,
    model: str = "8x GPU",
    driver: str = "slurm",
    address: str | None = None,
) -> Device:
    """A GPU node of 8 GPUs: 6 kW busy, 800 W idle, 150 TH/s mining, queue train, pool main."""
    return Device(
        id=device_id,
        kind=DeviceKind.GPU_NODE,
        model=model,
        driver=driver,
        address=address or device_id,
        port=0,
        nominal_hashrate_hs=150e12,
        nominal_power_w=6000.0,
        sleep_power_w=800.0,
        pools=("main",),
        gpus=8,
        queues=("train",),
    )


def sim_address(prefix: str, index: int) -> str:
    """The index-th loopback address under a two-octet prefix: 127.32 gives 127.32.0.1, 127.32.0.2, ..."""
    return f"{prefix}.{index // 250}.{index % 250 + 1}"
