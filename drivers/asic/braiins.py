"""Braiins OS personality, read path only: telemetry over its cgminer-compatible API.

Braiins OS controls (PauseMining / ResumeMining, SetPowerTarget) live in its
gRPC API behind a login token.  A gRPC client (grpcio plus generated stubs) is
a heavy dependency for the daemon, so this driver does not speak it yet:
polling works through the cgminer-compatible API on port 4028 (summary,
pools, stats), and every command is refused with a clear reason, so the
reconciler reports the device as rejected/drifted instead of assuming it obeyed.
"""

from __future__ import annotations

from drivers.asic.cgminer import CgminerDriver
from scheduler.model import Workload

REFUSAL = "Braiins OS control needs its gRPC API, which wattmux does not speak yet (read only)"


class BraiinsDriver(CgminerDriver):
    """Reads Braiins OS miners; refuses every command (no gRPC client)."""

    def _refusal(self, workload: Workload) -> str | None:
        return REFUSAL
