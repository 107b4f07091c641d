"""A real one-host Slurm cluster (munged, slurmctld, slurmd with fake GPUs) for the tests.

Everything lives in one temporary folder and on free loopback ports; nothing
of the machine's own Slurm or munge set-up is used or touched.  ``start()``
raises ``ClusterUnavailable`` with the exact reason when the cluster cannot
come up; the fixture turns that into a skip that names the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_port

NODE = "gpunode1"
GPUS = 4
BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo")


class ClusterUnavailable(Exception):
    """The cluster cannot run here; the message says why."""


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


SLURM_CONF = """\
ClusterName=wattmuxtest
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={d}/munge/run/munge.socket.2
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/slurmd.%n
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
ReturnToService=2
KillWait=2
SlurmdTimeout=30
SlurmctldTimeout=30
SlurmdParameters=config_overrides
InactiveLimit=0
NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=8 Sockets=1 CoresPerSocket=8 ThreadsPerCore=1 RealMemory=20000 Gres=gpu:{gpus} State=UNKNOWN
PartitionName=ai     Nodes={node} Default=YES MaxTime=INFINITE State=UP PriorityTier=100 PreemptMode=OFF
PartitionName=mining Nodes={node} Default=NO  MaxTime=INFINITE State=UP PriorityTier=1   PreemptMode=REQUEUE
"""

GRES_CONF = """\
AutoDetect=off
NodeName={node} Name=gpu File={d}/dev/nvidia[0-{last}]
"""


@dataclass
class SlurmCluster:
    """Start/stop a one-host cluster under ``directory``; ``env`` is what clients need."""

    directory: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        """The slurm.conf path (clients need SLURM_CONF pointing at it)."""
        return self.directory / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """Environment for Slurm client commands."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self, timeout_seconds: float = 30.0) -> None:
        """Write the config, start munged, slurmctld and slurmd; wait until the node is idle."""
        missing = [name for name in BINARIES if _which(name) is None]
        if missing:
            raise ClusterUnavailable(
                f"Slurm/munge binaries missing: {', '.join(missing)} "
                "(make test installs them: apt-get install slurm-wlm munge slurmrestd)"
            )
        if os.geteuid() != 0:
            raise ClusterUnavailable("the one-host cluster runs slurmd as root; not root here")
        d = self.directory
        for sub in ("munge/etc", "munge/run", "munge/log", "munge/lib", "state", "run", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "spool" / f"slurmd.{NODE}").mkdir(parents=True, exist_ok=True)
        for sub in ("munge/etc", "munge/lib", "munge/log"):
            (d / sub).chmod(0o700)
        (d / "dev").mkdir(exist_ok=True)
        for index in range(GPUS):
            device = d / "dev" / f"nvidia{index}"
            if not device.exists():
                os.mknod(device, 0o666 | 0o020000, os.makedev(195, index))
        self.conf.write_text(
            SLURM_CONF.format(
                d=d, ctld_port=free_port(), slurmd_port=free_port(), node=NODE, gpus=GPUS
            )
        )
        (d / "gres.conf").write_text(GRES_CONF.format(d=d, node=NODE, last=GPUS - 1))
        key = d / "munge/etc/munge.key"
        self._run([str(_which("mungekey")), "-c", "-k", str(key)])
        self._spawn(
            "munged",
            [
                str(_which("munged")),
                "-F",
                f"--socket={d}/munge/run/munge.socket.2",
                f"--key-file={key}",
                f"--pid-file={d}/munge/run/munged.pid",
                f"--seed-file={d}/munge/lib/munged.seed",
                f"--log-file={d}/munge/log/munged.log",
            ],
        )
        self._wait_for(lambda: (d / "munge/run/munge.socket.2").exists(), 10.0, "munged socket")
        self._spawn("slurmctld", [str(_which("slurmctld")), "-D", "-f", str(self.conf)])
        self._spawn("slurmd", [str(_which("slurmd")), "-D", "-N", NODE, "-f", str(self.conf)])
        self._wait_for(lambda: self.node_state() == "IDLE", timeout_seconds, "node idle")

    def node_state(self) -> str:
        """The node's state as scontrol reports it (``IDLE``, ``MIXED``, ``IDLE+DRAIN``...); '' if unknown."""
        result = subprocess.run(
            ["scontrol", "-o", "show", "node", NODE],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        for token in result.stdout.split():
            if token.startswith("State="):
                return token.removeprefix("State=")
        return ""

    def command(self, *args: str) -> str:
        """Run a Slurm client command; return stdout, raise CalledProcessError on failure."""
        result = subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=20, check=True
        )
        return result.stdout

    def sbatch(self, *args: str) -> str:
        """Submit a job; return its id."""
        # Jobs write nothing into the working tree: output goes nowhere unless a test says where.
        return (
            self.command(
                "sbatch", "--parsable", f"--chdir={self.directory}", "--output=/dev/null", *args
            )
            .strip()
            .split(";")[0]
        )

    def job_state(self, job_id: str) -> str:
        """The job's state (PENDING, RUNNING, ...), or '' once it has left squeue."""
        return self.command("squeue", "-h", "-j", job_id, "-o", "%T").strip()

    def reset(self) -> None:
        """Cancel every job, delete reservations and resume the node (between tests)."""
        self.command("scancel", "--full", "--user=root")
        deadline = time.monotonic() + 20
        while self.command("squeue", "-h", "-o", "%i").strip() and time.monotonic() < deadline:
            time.sleep(0.2)
        for line in self.command("scontrol", "-o", "show", "reservation").splitlines():
            if line.startswith("ReservationName="):
                name = line.split()[0].split("=", 1)[1]
                self.command("scontrol", "delete", f"reservationname={name}")
        if "DRAIN" in self.node_state():
            self.command("scontrol", "update", f"nodename={NODE}", "state=resume")
        self._wait_for(
            lambda: self.node_state().split("+")[0] == "IDLE" and "DRAIN" not in self.node_state(),
            20.0,
            "node idle after reset",
            lambda: self.node_state() + " " + self.command("squeue", "-h", "-o", "%i %T %j %P"),
        )

    def log_tail(self, lines: int = 20) -> str:
        """The end of every daemon log, for failure messages."""
        out = []
        for path in sorted((self.directory / "log").glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self) -> None:
        """Stop slurmd, slurmctld, then munged; SIGKILL what ignores SIGTERM; reap all."""
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.pop(name, None)
            if process is None:
                continue
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
        if result.returncode != 0:
            raise ClusterUnavailable(f"{argv[0]} failed: {result.stderr.strip()}")

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.directory / "log" / f"{name}.out").open("wb")
        self.processes[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=self.env
        )
        log.close()

    def _wait_for(
        self,
        ready: Callable[[], bool],
        timeout_seconds: float,
        what: str,
        describe: Callable[[], str] | None = None,
    ) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    out = (self.directory / "log" / f"{name}.out").read_text(errors="replace")
                    raise ClusterUnavailable(
                        f"{name} exited with {process.returncode} while waiting for {what}: "
                        f"{out.strip()[-800:]}\n{self.log_tail()}"
                    )
            if ready():
                return
            time.sleep(0.1)
        seen = f" (last seen: {describe()!r})" if describe else ""
        raise ClusterUnavailable(
            f"timed out after {timeout_seconds:g} s waiting for {what}{seen}\n{self.log_tail()}"
        )
