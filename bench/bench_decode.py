"""Decoding one MQTT device sample: msgspec (used) vs pydantic v2 JSON mode (the alternative)."""

from __future__ import annotations

import json
import time

import msgspec
from pydantic import BaseModel

from drivers.telemetry.messages import Decoder, Limits, SampleMessage

PAYLOAD = json.dumps(
    {
        "ts": time.time(),
        "power_w": 3500.0,
        "hashrate_hs": 2.0e14,
        "temperature_c": 61.5,
        "workload": "mine(main)",
        "pool_url": "stratum+tcp://main.pool.invalid:3333",
    }
).encode()


class PydanticSample(BaseModel):
    ts: float
    power_w: float
    workload: str
    hashrate_hs: float = 0.0
    temperature_c: float | None = None
    pool_url: str | None = None
    device_id: str | None = None


def rate(fn: object, n: int = 200_000) -> float:
    call = fn  # type: ignore[assignment]
    start = time.perf_counter()
    for _ in range(n):
        call(PAYLOAD)  # type: ignore[operator]
    return n / (time.perf_counter() - start)


def main() -> None:
    msgspec_decoder = msgspec.json.Decoder(SampleMessage)
    full = Decoder(Limits())
    wall = time.time()
    rows = [
        ("decode_msgspec_per_second", rate(msgspec_decoder.decode)),
        ("decode_pydantic_json_per_second", rate(PydanticSample.model_validate_json)),
        ("decode_validate_sample_per_second", rate(lambda p: full.sample("a1", p, wall, 0.0))),
    ]
    for name, value in rows:
        print(json.dumps({"name": name, "value": round(value), "unit": "msgs/s"}))


if __name__ == "__main__":
    main()
