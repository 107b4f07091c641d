"""The small protocols every driver implements (see docs/design.md, "The contracts")."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from scheduler.core.model import Device, Outcome, QueueDemand, Reading, Sample, Workload


@runtime_checkable
class TelemetrySource(Protocol):
    """Reads the current state of one device; raises DriverError when it cannot."""

    async def collect(self, device: Device) -> Sample:
        """Return a fresh sample of the device."""
        ...


@runtime_checkable
class MinerControl(Protocol):
    """Moves a device to a workload and confirms it by reading back."""

    async def apply(self, device: Device, workload: Workload) -> Outcome:
        """Command the device; return CONFIRMED only once the device reports the workload."""
        ...


@runtime_checkable
class SendsThenConfirms(Protocol):
    """Optional capability: the command and its read-back as two steps.

    ``apply`` is ``send`` then, when it returns None, ``confirm``.  A send that
    returned None may leave housekeeping to its confirm (LuxOS owes the
    ``logoff``), so a caller always follows it with confirm.  The reconciler
    gives waiting sends its command slots before any read-back, so every command
    of a fleet-wide change is on its way before the read-backs take their turn.
    """

    async def send(self, device: Device, workload: Workload) -> Outcome | None:
        """Send the command: None once the device accepted it, else the final outcome."""
        ...

    async def confirm(self, device: Device, workload: Workload) -> Outcome:
        """Read back until the device reports the workload or the deadline passes."""
        ...


@runtime_checkable
class MarketFeed(Protocol):
    """One market input (BTC price, difficulty, fees, power price)."""

    name: str

    async def fetch(self) -> dict[str, Reading]:
        """Return readings keyed by MarketState field name; raise DriverError on failure."""
        ...


@runtime_checkable
class QueueControl(Protocol):
    """An AI job queue (Slurm, Kubernetes, webhook): its demand, and GPU nodes moved in or out of it."""

    async def demand(self) -> dict[str, QueueDemand]:
        """Pending work per queue name; raise DriverError when the queue cannot be read."""
        ...

    async def apply(self, device: Device, workload: Workload) -> Outcome:
        """Move a GPU node to ai(queue), mine(pool) (a preemptible job) or sleep; confirm by reading back."""


@runtime_checkable
class ReportsSources(Protocol):
    """Optional capability of a feed combining several upstream sources: each one's state."""

    def up(self) -> dict[str, bool]:
        """Whether each upstream source's last poll succeeded."""
        ...
