"""Slurm's command-line clients (squeue, scontrol, sbatch, scancel) run asynchronously, and their output parsed.

The clients are used rather than slurmrestd because they are on every Slurm
login node with no extra daemon, token or plugin, and because the REST API
offered by Slurm 22.05 (v0.0.36-v0.0.38) cannot update a node, so drain and
resume would need ``scontrol`` anyway.  Structured output where the client
offers it (``squeue --json``), one-line ``key=value`` records otherwise
(``scontrol -o show ...``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drivers.errors import Fatal, MalformedReply, Rejected, Timeout, Unavailable

_GPU_COUNT = re.compile(r"(?:^|[,/:])gpu(?::[A-Za-z0-9_.-]+)?[:=](\d+)")
_UNREACHABLE = ("Unable to contact slurm controller", "Socket timed out", "Connection refused")


@dataclass(frozen=True, slots=True)
class SlurmJob:
    """The fields of one squeue record that wattmux uses."""

    job_id: str
    name: str
    partition: str
    state: str
    nodes: str
    gpus: int
    start_time: float  # epoch seconds; 0 when not started
    time_limit_seconds: float | None
    comment: str


def gpus_in(tres: str) -> int:
    """GPUs named in a TRES/GRES string such as ``gres:gpu:2``, ``gres/gpu=4`` or ``gpu:a100:2``; 0 if none."""
    return sum(int(match.group(1)) for match in _GPU_COUNT.finditer(tres or ""))


def _number(record: Mapping[str, Any], key: str) -> float | None:
    """A squeue JSON number; newer Slurm wraps them as {"set": bool, "number": n}."""
    value = record.get(key)
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    raise ValueError(f"{key}: expected a number, got {value!r}")


def _text(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if isinstance(value, list):  # job_state is a list in newer Slurm
        value = value[0] if value else ""
    return "" if value is None else str(value)


def parse_squeue_json(text: str, source: str) -> list[SlurmJob]:
    """Jobs from ``squeue --json``; MalformedReply when the document is not what squeue writes."""
    try:
        document = json.loads(text)
        records = document["jobs"]
        if not isinstance(records, list):
            raise TypeError("jobs is not a list")
        jobs = []
        for record in records:
            node_count = _number(record, "node_count") or 1.0
            per_node = gpus_in(_text(record, "tres_per_node"))
            gpus = gpus_in(_text(record, "tres_per_job")) or per_node * int(node_count)
            limit_minutes = _number(record, "time_limit")
            job_id = _number(record, "job_id")
            if job_id is None:
                raise ValueError("a job without job_id")
            jobs.append(
                SlurmJob(
                    job_id=str(int(job_id)),
                    name=_text(record, "name"),
                    partition=_text(record, "partition"),
                    state=_text(record, "job_state").upper(),
                    nodes=_text(record, "nodes"),
                    gpus=gpus,
                    start_time=_number(record, "start_time") or 0.0,
                    time_limit_seconds=None if limit_minutes is None else limit_minutes * 60,
                    comment=_text(record, "comment"),
                )
            )
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedReply(source, f"squeue --json: {exc}") from exc
    return jobs


def parse_records(text: str) -> list[dict[str, str]]:
    """``scontrol -o show ...`` output: one record per line of space-separated key=value pairs."""
    records = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("No "):
            continue
        record: dict[str, str] = {}
        for token in line.split():
            key, sep, value = token.partition("=")
            if sep:
                record[key] = value
            elif record:  # a value with spaces (Reason=...) continues the previous key
                last = next(reversed(record))
                record[last] += " " + token
        records.append(record)
    return records


class SlurmCli:
    """Runs Slurm clients with a deadline; failures become DriverError subclasses."""

    def __init__(
        self, source: str, slurm_conf: str | None = None, timeout_seconds: float = 10.0
    ) -> None:
        self.source = source
        self.timeout_seconds = timeout_seconds
        self._env = dict(os.environ)
        if slurm_conf:
            self._env["SLURM_CONF"] = slurm_conf

    async def run(self, *argv: str) -> str:
        """Run one client command; return stdout or raise Timeout / Unavailable / Rejected / Fatal."""
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
            )
        except FileNotFoundError as exc:
            raise Fatal(self.source, f"{argv[0]} not found: install the Slurm clients") from exc
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), self.timeout_seconds)
        except TimeoutError as exc:
            process.kill()
            await process.wait()
            raise Timeout(
                self.source, f"{' '.join(argv[:3])} gave no answer in {self.timeout_seconds:g} s"
            ) from exc
        error = stderr.decode(errors="replace").strip()
        if process.returncode != 0:
            message = f"{' '.join(argv[:4])}: exit {process.returncode}: {error[:300]}"
            if any(marker in error for marker in _UNREACHABLE):
                raise Unavailable(self.source, message)
            raise Rejected(self.source, message)
        return stdout.decode(errors="replace")

    async def jobs(self) -> list[SlurmJob]:
        """Every job slurmctld knows (squeue --json lists all states; filter on the client)."""
        return parse_squeue_json(await self.run("squeue", "--json"), self.source)

    async def node(self, name: str) -> dict[str, str]:
        """One node's record from ``scontrol -o show node``."""
        records = parse_records(await self.run("scontrol", "-o", "show", "node", name))
        if len(records) != 1 or records[0].get("NodeName") != name:
            raise MalformedReply(self.source, f"scontrol show node {name}: no single record")
        return records[0]

    async def reservations(self) -> set[str]:
        """Names of the reservations that exist now."""
        records = parse_records(await self.run("scontrol", "-o", "show", "reservation"))
        return {r["ReservationName"] for r in records if "ReservationName" in r}
