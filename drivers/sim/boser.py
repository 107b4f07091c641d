"""What a simulated Braiins OS (BOSer, 21.09 to 25.05) shows besides its gRPC control API.

- The cgminer-compatible API on port 4028 names itself as real BOSer does:
  ``version`` has ``{"API": "3.7", "BOSer": "boser-buildroot 0.1.0-<hash>"}`` and
  STATUS Description ``BOSer boser-buildroot ...`` (the shape of replies captured
  from 24.09 and 25.05); ``summary`` carries ``MHS 1m`` / ``MHS 5s`` / ``MHS av``
  (no ``Power``: BOSer reports power over gRPC only); ``devdetails`` names the model
  (``Model`` = ``Antminer S19j Pro``, chips per board); ``devs`` has one row per
  hashboard; ``tunerstatus`` the tuner's chain states.
- Board, fan, power, pool and locate reads over gRPC (``MinerService``,
  ``CoolingService``, ``PoolService``, ``ActionsService``, ``PerformanceService``,
  ``ConfigurationService``) come from :class:`BoserState` below, which
  drivers/sim/braiins_grpc.py serves.
- The web interface (drivers/sim/braiins_web.py) serves the page whose title
  names Braiins OS and the GraphQL queries other clients make to read the model
  and the version.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from drivers.asic import bos_messages as bos
from drivers.sim.miner import BOARDS, FANS, Reply, SimMiner
from drivers.sim.physics import CHIP_RISE_C

BOSER_BUILD = "boser-buildroot 0.1.0-45f356ea"  # as the 25.05 capture reports it
BOS_VERSION = "2025-05-06-0-9b3e2f54-25.05-plus"
CHIPS_PER_BOARD = {"S19j Pro": 126, "S19 Pro": 114, "S19k Pro": 77, "S21": 108, "S19 XP": 110}
DEFAULT_CHIPS = 108


@dataclass(slots=True)
class BoserState:
    """The parts of a BOSer miner that only its gRPC and web APIs show."""

    locate: bool = False


def chips_per_board(model: str) -> int:
    """Chips on one hashboard of ``model`` (a round default for models not listed)."""
    return CHIPS_PER_BOARD.get(model, DEFAULT_CHIPS)


def mac_address(miner: SimMiner) -> str:
    """A stable locally administered MAC per device id."""
    crc = zlib.crc32(miner.device.id.encode())
    return "02:" + ":".join(f"{(crc >> shift) & 0xFF:02x}" for shift in (24, 16, 8, 0)) + ":01"


def fan_rpms(miner: SimMiner, now: float) -> list[int]:
    """Fan speeds following the thermal load (same law as the cgminer ``stats`` reply)."""
    load = (miner.chip_temperature_c(now) - miner.physics.ambient_c) / CHIP_RISE_C
    base = round(1500 + 4500 * min(1.0, max(0.0, load)))
    return [base + 30 * fan for fan in range(1, FANS + 1)]


def board_serial(miner: SimMiner) -> str:
    """The stem of a hashboard's serial number (the board index follows it)."""
    return f"SIM{zlib.crc32(miner.device.id.encode()):08X}"


def board_rows(miner: SimMiner, now: float) -> list[tuple[float, int, int]]:
    """Per board: (hash rate in GH/s, hottest chip °C, hottest PCB °C)."""
    share = miner.hashrate_hs(now) / 1e9 / BOARDS
    return [(share, max(chip), max(pcb)) for chip, pcb in miner.physics.board_temperatures_c(now)]


def play_boser(miner: SimMiner) -> None:
    """Make ``miner``'s cgminer API answer as BOSer does (version, summary, devdetails, devs)."""
    miner.become_braiins_os()
    model = f"Antminer {miner.device.model}"

    def status(code: int, message: str, section: str, rows: list[Reply]) -> Reply:
        reply = miner._ok(code, message, section, rows)
        for entry in reply["STATUS"]:
            entry["Description"] = f"BOSer {BOSER_BUILD}"
        return reply

    def version(_parameter: str | None) -> Reply:
        return status(22, "BOSer versions", "VERSION", [{"API": "3.7", "BOSer": BOSER_BUILD}])

    def summary(parameter: str | None) -> Reply:
        row = dict(miner._summary(parameter)["SUMMARY"][0])
        row.pop("Power", None)
        row["MHS 1m"] = row["MHS 5s"]
        row["MHS 15m"] = row["MHS av"]
        return status(11, "Summary", "SUMMARY", [row])

    def devdetails(_parameter: str | None) -> Reply:
        rows = [
            {
                "DEVDETAILS": board,
                "Name": "Hashboard",
                "ID": board,
                "Driver": "bitmain",
                "Kernel": "",
                "Model": model,
                "Chips": chips_per_board(miner.device.model),
                "Voltage": 13.5,
                "Frequency": 525,
            }
            for board in range(BOARDS)
        ]
        return status(69, "Device Details", "DEVDETAILS", rows)

    def devs(_parameter: str | None) -> Reply:
        now = miner._clock()
        rows = [
            {
                "ASC": board,
                "Name": "Hashboard",
                "ID": board,
                "Enabled": "Y",
                "Status": "Alive",
                "Temperature": float(pcb),
                "Chip Temp": float(chip),
                "MHS 5s": round(ghs * 1e3, 2),
                "MHS 1m": round(ghs * 1e3, 2),
                "MHS av": round(ghs * 1e3, 2),
            }
            for board, (ghs, chip, pcb) in enumerate(board_rows(miner, now))
        ]
        return status(9, f"{BOARDS} ASC(s)", "DEVS", rows)

    def tunerstatus(_parameter: str | None) -> Reply:
        chains = [
            {"HashchainIndex": board, "Status": "Stable", "PowerLimitWatt": 0}
            for board in range(BOARDS)
        ]
        row = {"TunerChainStatus": chains, "TunerRunning": True}
        return status(123, "Tuner Status", "TUNERSTATUS", [row])

    miner._handlers.update(
        {
            "version": version,
            "summary": summary,
            "devdetails": devdetails,
            "devs": devs,
            "tunerstatus": tunerstatus,
        }
    )


def hashboards(miner: SimMiner, now: float) -> bos.GetHashboardsResponse:
    """GetHashboards: one entry per board, chips, temperatures, 5 s hash rate."""
    chips = chips_per_board(miner.device.model)
    boards = []
    for index, (ghs, chip, pcb) in enumerate(board_rows(miner, now)):
        rate = bos.GigaHashrate(ghs)
        boards.append(
            bos.Hashboard(
                id=str(index + 1),
                enabled=True,
                chips_count=bos.UInt32Value(chips),
                current_voltage=bos.Voltage(13.5),
                current_frequency=bos.Frequency(525e6),
                highest_chip_temp=bos.TemperatureSensor(
                    location=1, temperature=bos.Temperature(float(chip))
                ),
                board_temp=bos.Temperature(float(pcb)),
                stats=bos.WorkSolverStats(
                    real_hashrate=bos.RealHashrate(last_5s=rate, last_1m=rate, last_15m=rate),
                    nominal_hashrate=bos.GigaHashrate(
                        miner.device.nominal_hashrate_hs / 1e9 / BOARDS
                    ),
                ),
                model=miner.device.model,
                serial_number=f"{board_serial(miner)}{index}",
            )
        )
    return bos.GetHashboardsResponse(tuple(boards))


def miner_stats(miner: SimMiner, now: float) -> bos.GetMinerStatsResponse:
    """GetMinerStats: hash rates and the approximated consumption in W."""
    rate = bos.GigaHashrate(miner.hashrate_hs(now) / 1e9)
    return bos.GetMinerStatsResponse(
        pool_stats=bos.PoolStats(),
        miner_stats=bos.WorkSolverStats(
            real_hashrate=bos.RealHashrate(last_5s=rate, last_1m=rate, last_15m=rate),
            nominal_hashrate=bos.GigaHashrate(miner.device.nominal_hashrate_hs / 1e9),
        ),
        power_stats=bos.MinerPowerStats(bos.Power(round(miner.power_w(now)))),
    )


def cooling(miner: SimMiner, now: float) -> bos.GetCoolingStateResponse:
    """GetCoolingState: each fan's rpm and the hottest chip."""
    fans = tuple(
        bos.FanState(position=index, rpm=rpm, target_speed_ratio=rpm / 6500)
        for index, rpm in enumerate(fan_rpms(miner, now))
    )
    hottest = max(chip for _, chip, _ in board_rows(miner, now))
    return bos.GetCoolingStateResponse(
        fans, bos.TemperatureSensor(location=1, temperature=bos.Temperature(float(hottest)))
    )


def pool_groups(miner: SimMiner) -> bos.GetPoolGroupsResponse:
    """GetPoolGroups: one group ("default") with the miner's pools, the active one marked."""
    rows = miner._pools_reply(None)["POOLS"]
    pools = tuple(
        bos.BosPool(
            uid=str(row["POOL"]),
            url=row["URL"],
            user=row["User"],
            enabled=row["Status"] != "Disabled",
            alive=row["Status"] == "Alive",
            active=bool(row["Stratum Active"]),
            stats=bos.PoolStats(),
        )
        for row in rows
    )
    return bos.GetPoolGroupsResponse((bos.PoolGroup("default", bos.Quota(1), pools),))


def configuration(miner: SimMiner, target_w: int) -> bos.GetMinerConfigurationResponse:
    """GetMinerConfiguration: the pool group and the tuner in power-target mode."""
    rows = miner._pools_reply(None)["POOLS"]
    pools = tuple(
        bos.PoolConfiguration(str(row["POOL"]), row["URL"], row["User"], True) for row in rows
    )
    group = bos.PoolGroupConfiguration("0", "default", bos.Quota(1), pools)
    tuner = bos.TunerConfiguration(True, 1, bos.Power(target_w))
    return bos.GetMinerConfigurationResponse((group,), tuner)


def details(miner: SimMiner, status: int) -> bos.MinerDetails:
    """GetMinerDetails with identity, version, MAC and sticker hash rate."""
    uptime = int(max(0.0, miner.physics.now(None) - miner.physics.started_at))
    return bos.MinerDetails(
        uid=miner.device.id,
        miner_identity=bos.MinerIdentity(f"Antminer {miner.device.model}"),
        bos_version=bos.BosVersion(BOS_VERSION, "2025-05", True),
        hostname=miner.device.id,
        mac_address=mac_address(miner),
        sticker_hashrate=bos.GigaHashrate(miner.device.nominal_hashrate_hs / 1e9),
        bosminer_uptime_s=uptime,
        system_uptime_s=uptime,
        status=status,
        serial_number=f"SIM{zlib.crc32(miner.device.id.encode()):08X}",
    )
