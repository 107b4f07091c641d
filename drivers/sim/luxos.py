"""LuxOS for the simulated miner: sessions, curtail, power profiles and ATM.

Sessions: ``logon`` (one at a time, dropped after session_timeout_seconds idle),
``logoff|sid``, ``session``; ``curtail|sid,sleep`` or ``sid,wakeup`` needs the session,
as does ``rebootdevice|sid`` (the miner restarts at once: uptime from 0, session gone).

Facts followed: profiles are per machine; ``profileset`` takes ``<session>,<profile>``
where the profile is a name or a power selector like ``3000W`` (nearest profile by
power); ``atmset`` takes ``<session>,enabled=true|false``.  The simulator refuses a
profile change while ATM (the automatic tuner) is on, so a client that forgets to
turn ATM off first is caught; a real miner would let ATM move the profile again.
Profiles are 4% power steps around the default, named by frequency as LuxOS names
them (``190MHz`` .. ``default`` .. ``790MHz``, 25 MHz a step, ``Step`` ``-16`` .. ``8``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

from drivers.sim.physics import MinerPhysics

Reply = dict[str, Any]

STEP_SHARE = 0.04
PROFILE_STEPS = range(-16, 9)


DEFAULT_MHZ = 590
STEP_MHZ = 25
LUXMINER_BUILD = "2025.4.8.220305-57b389c7"
LUXMINER_COMPILE_TIME = "Tue Apr  8 22:05:35 UTC 2025"


def profile_name(step: int) -> str:
    """LuxOS's name for a profile step: ``default`` at 0, else its frequency (``290MHz``)."""
    return "default" if step == 0 else f"{DEFAULT_MHZ + STEP_MHZ * step}MHz"


class LuxosHost(Protocol):
    """What SimLuxos uses of the miner it runs on (drivers.sim.miner.SimMiner)."""

    physics: MinerPhysics
    session_timeout_seconds: float

    def set_asleep(self, asleep: bool) -> None:
        """Put the miner to sleep or wake it."""
        ...

    def set_power_level(self, power_level: float) -> None:
        """Run at a share of stock power."""
        ...

    def reboot(self) -> None:
        """Restart now: uptime starts again."""
        ...

    def _ok(
        self, code: int, message: str, section: str | None = None, rows: list[Reply] | None = None
    ) -> Reply: ...

    def _error(self, code: int, message: str) -> Reply: ...


class SimLuxos:
    """Profile and ATM state of one simulated LuxOS miner."""

    def __init__(self, miner: LuxosHost, session_seed: int) -> None:
        self.miner = miner
        self._session_rng = random.Random(session_seed)
        self._session_id: str | None = None
        self._session_used_at = 0.0
        self.atm_enabled = True
        self.step = 0
        self.changes_with_atm_on = 0
        self.red_led = "auto"

    def handlers(self) -> dict[str, Callable[[str | None], Reply]]:
        """The commands this adds to the miner."""
        return {
            "logon": self._logon,
            "logoff": self._logoff,
            "session": self._session,
            "curtail": self._curtail,
            "profiles": self._profiles,
            "profileset": self._profileset,
            "atm": self._atm,
            "atmset": self._atmset,
            "rebootdevice": self._rebootdevice,
        }

    def session_valid(self, session_id: str) -> bool:
        """True when ``session_id`` is the live session (and refresh it), as LuxOS does."""
        now = self.miner.physics.now(None)
        if (
            self._session_id is not None
            and now - self._session_used_at >= self.miner.session_timeout_seconds
        ):
            self._session_id = None
        if self._session_id is None or session_id != self._session_id:
            return False
        self._session_used_at = now
        return True

    def _logon(self, _parameter: str | None) -> Reply:
        if self.session_valid(self._session_id or ""):
            return self.miner._error(304, "Another session is active")
        self._session_id = f"{self._session_rng.getrandbits(32):08x}"
        self._session_used_at = self.miner.physics.now(None)
        return self.miner._ok(300, "Session created", "SESSION", [{"SessionID": self._session_id}])

    def _logoff(self, parameter: str | None) -> Reply:
        if not self.session_valid((parameter or "").strip()):
            return self.miner._error(45, "Access denied to 'logoff' command: invalid session")
        self._session_id = None
        return self.miner._ok(301, "Session dropped")

    def _session(self, _parameter: str | None) -> Reply:
        current = self._session_id if self.session_valid(self._session_id or "") else ""
        return self.miner._ok(302, "Session information", "SESSION", [{"SessionID": current}])

    def _curtail(self, parameter: str | None) -> Reply:
        session_id, _, action = (parameter or "").partition(",")
        if not self.session_valid(session_id.strip()):
            return self.miner._error(45, "Access denied to 'curtail' command: invalid session")
        action = action.strip().lower()
        if action not in ("sleep", "wakeup"):
            return self.miner._error(
                305, f"Invalid curtail action '{action}' (expected sleep or wakeup)"
            )
        self.miner.set_asleep(action == "sleep")
        # LuxOS answers that the command was sent, not the state reached: a read-back decides.
        performed = "sleep mode" if action == "sleep" else "wake up"
        return self.miner._ok(335, "Curtailment command sent", "CURTAIL", [{"Action": performed}])

    def _watts(self, step: int) -> float:
        return self.miner.physics.mining_power_w * (1 + STEP_SHARE * step)

    def _profiles(self, _parameter: str | None) -> Reply:
        rows = [
            {
                "CanRestore": True,
                "Frequency": DEFAULT_MHZ + STEP_MHZ * step,
                "HasOverrides": False,
                "Hashrate": round(
                    self.miner.physics.mining_hashrate_hs * (1 + STEP_SHARE * step) / 1e12, 1
                ),
                "IsDynamic": True,
                "IsTuned": True,
                "Profile Name": profile_name(step),
                "Step": str(step),
                "Voltage": round(13.5 + 0.15 * step, 2),
                "Watts": round(self._watts(step)),
            }
            for step in PROFILE_STEPS
        ]
        return self.miner._ok(327, "Profiles", "PROFILES", rows)

    def _select(self, wanted: str) -> int | None:
        if wanted.endswith("W") and wanted[:-1].isdigit():
            watts = float(wanted[:-1])
            return min(PROFILE_STEPS, key=lambda step: abs(self._watts(step) - watts))
        return next((step for step in PROFILE_STEPS if profile_name(step) == wanted), None)

    def _profileset(self, parameter: str | None) -> Reply:
        session_id, _, wanted = (parameter or "").partition(",")
        if not self.session_valid(session_id.strip()):
            return self.miner._error(45, "Access denied to 'profileset' command: invalid session")
        step = self._select(wanted.strip())
        if step is None:
            return self.miner._error(322, f"Invalid profile '{wanted.strip()}'")
        if self.atm_enabled:
            self.changes_with_atm_on += 1
            return self.miner._error(323, "ATM is enabled: disable it before setting a profile")
        self.step = step
        self.miner.set_power_level(1 + STEP_SHARE * step)
        row = {"Board": 0, "FrequencyStep": 5, "Profile": profile_name(step), "VoltageStep": 0.05}
        return self.miner._ok(321, "Profile Set", "PROFILE", [row])

    def _atm(self, _parameter: str | None) -> Reply:
        row = {
            "Enabled": self.atm_enabled,
            "MaxProfile": profile_name(max(PROFILE_STEPS)),
            "MinProfile": profile_name(min(PROFILE_STEPS)),
            "PostRampMinutes": 15,
            "StartupMinutes": 15,
            "TempWindow": 5,
        }
        return self.miner._ok(339, "ATM configuration", "ATM", [row])

    def ledset(self, parameter: str | None) -> Reply:
        """``ledset <session>,red,blink|on|off|auto`` (the locate LED)."""
        session_id, _, rest = (parameter or "").partition(",")
        if not self.session_valid(session_id.strip()):
            return self.miner._error(45, "Access denied to 'ledset' command: invalid session")
        color, _, state = rest.partition(",")
        if color.strip() not in ("red", "green") or state.strip() not in (
            "blink",
            "on",
            "off",
            "auto",
        ):
            return self.miner._error(343, f"Invalid LED setting '{rest}'")
        if color.strip() == "red":
            self.red_led = state.strip()
        return self.miner._ok(342, "LED set", "LED", [{"Color": color.strip(), "State": state}])

    def _rebootdevice(self, parameter: str | None) -> Reply:
        """``rebootdevice <session>``: answers, then restarts (the session ends with it)."""
        if not self.session_valid((parameter or "").strip()):
            return self.miner._error(45, "Access denied to 'rebootdevice' command: invalid session")
        self._session_id = None
        self.miner.reboot()
        return self.miner._ok(3, "Rebooting device")  # this simulator's code and text

    def _atmset(self, parameter: str | None) -> Reply:
        session_id, _, settings = (parameter or "").partition(",")
        if not self.session_valid(session_id.strip()):
            return self.miner._error(45, "Access denied to 'atmset' command: invalid session")
        for pair in filter(None, (p.strip() for p in settings.split(","))):
            key, _, value = pair.partition("=")
            if key != "enabled" or value not in ("true", "false"):
                return self.miner._error(341, f"Invalid ATM setting '{pair}'")
            self.atm_enabled = value == "true"
        return self.miner._ok(340, "ATM configuration updated")
