"""Devices grouped into classes of identical ones, and the cache that keeps the grouping.

``max-margin`` decides each class once: devices with the same facts (power,
hash rate, sleep power, pools) and the same current workload.  Grouping
100,000 devices each tick would cost more than deciding them, so
``DeviceGrouper`` keeps the last grouping while the devices and their current
workloads stay equal, and remembers each device object's facts by identity.
GPU nodes and devices without pools are left out (the GPU queue planner
decides GPU nodes).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import compress, repeat
from operator import attrgetter

from scheduler.core.model import Device, DeviceKind, Snapshot, Workload

# (device ids, the first device, its current workload) of one class.
Group = tuple[tuple[str, ...], Device, Workload | None]


@dataclass(frozen=True, slots=True)
class Grouping:
    """How one call grouped its devices: reused while devices and current workloads stay equal."""

    devices: list[Device]
    current_ids: list[str]  # snapshot.current's keys and values, in its order
    currents: list[Workload]
    groups: list[Group]  # ids, first device, its current
    has_gpu_nodes: bool


class DeviceGrouper:
    """Groups a snapshot's devices into classes; reuses the last grouping while it holds."""

    def __init__(self) -> None:
        # Memo of id(device) -> index of its facts (-1: no pools).  _alive holds every device
        # it has seen, so an id in it can never be reused by another object.
        self._facts_of: dict[int, int] = {}
        self._facts_index: dict[tuple[object, ...], int] = {}
        self._alive: list[Device] = []
        self.last: Grouping | None = None

    def group(self, snapshot: Snapshot) -> list[Group]:
        """Devices grouped by facts, pools and current workload; the last grouping while it holds.

        It holds while the devices (same objects or equal ones, in the same order) and the
        current workloads (same device ids in the same order, equal values) are those of the
        last call: list comparisons in C, identity first, instead of a dictionary walk per device.
        """
        devices = list(snapshot.devices.values())
        current_ids = list(snapshot.current)
        currents = list(snapshot.current.values())
        last = self.last
        if (
            last is not None
            and last.devices == devices
            and last.current_ids == current_ids
            and last.currents == currents
        ):
            return last.groups
        groups = self._regroup(snapshot, devices)
        has_gpu_nodes = any(d.kind is DeviceKind.GPU_NODE for d in devices)
        self.last = Grouping(devices, current_ids, currents, groups, has_gpu_nodes)
        return groups

    def _regroup(self, snapshot: Snapshot, devices: list[Device]) -> list[Group]:
        """Group devices with the same facts, pools and current workload.

        Column by column with C loops (map, zip, dict.fromkeys), in the devices' order: a
        device's key is (index of its facts, kind value, pool, power level, queue of its current
        workload; None for each without one).  Devices without pools (index -1) are left out.
        """
        facts_of = self._facts_of
        if len(facts_of) > 2 * len(devices) + 1024:
            self._forget()  # the fleet changed: drop entries of devices that are gone
        facts = list(map(facts_of.get, map(id, devices)))
        if None in facts:
            for position, device in enumerate(devices):
                if facts[position] is None:
                    facts[position] = self._remember(device)
        ids = list(map(_ID_OF, devices))
        currents = list(map(snapshot.current.get, ids))
        nones = repeat(None)
        kinds = map(
            getattr, map(getattr, currents, repeat("kind"), nones), repeat("_value_"), nones
        )
        keys = list(
            zip(
                facts,
                kinds,  # the enum's value: hashed in C, unlike the member
                map(getattr, currents, repeat("pool"), nones),
                map(getattr, currents, repeat("power_level"), nones),
                map(getattr, currents, repeat("queue"), nones),
                strict=True,
            )
        )
        order = list(dict.fromkeys(keys))
        first = dict(zip(reversed(keys), range(len(keys) - 1, -1, -1), strict=True))
        members: list[tuple[str, ...]]
        if len(order) == 1:
            members = [tuple(ids)]
        else:
            code_of = {key: code for code, key in enumerate(order)}
            codes = list(map(code_of.__getitem__, keys))
            if len(order) <= 16:  # one C pass per class
                members = [
                    tuple(compress(ids, map(code.__eq__, codes))) for code in range(len(order))
                ]
            else:
                lists: list[list[str]] = [[] for _ in order]
                appends = [member.append for member in lists]
                for code, device_id in zip(codes, ids, strict=True):
                    appends[code](device_id)
                members = list(map(tuple, lists))
        return [
            (member, devices[first[key]], currents[first[key]])
            for key, member in zip(order, members, strict=True)
            if key[0] is not None and key[0] >= 0  # no pools: nothing to decide
        ]

    def _remember(self, device: Device) -> int:
        """Index of the device's facts (power, hash rate, sleep power, pools); -1 without pools."""
        facts = (
            device.nominal_power_w,
            device.nominal_hashrate_hs,
            device.sleep_power_w,
            device.pools,
        )
        # GPU nodes are planned by gpu_queue (AI queues against mining), not by the knapsack.
        plannable = bool(device.pools) and device.kind is DeviceKind.ASIC
        index = self._facts_index.setdefault(facts, len(self._facts_index)) if plannable else -1
        self._facts_of[id(device)] = index
        self._alive.append(device)
        return index

    def _forget(self) -> None:
        self._facts_of.clear()
        self._facts_index.clear()
        self._alive.clear()


_ID_OF = attrgetter("id")
