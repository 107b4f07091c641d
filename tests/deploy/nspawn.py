"""A Debian 12 system booted with systemd-nspawn, systemd 252 as its PID 1, for the unit tests.

The root file system is built once by tests/deploy/nspawn_root.sh (``make nspawn-root``)
and never changed: the container boots with ``--volatile=overlay`` (every write goes to a
tmpfs).  It shares the host's network, so the daemon inside reaches simulated miners on
the host's loopback addresses.  A copy of the checkout's files is bound at /src and the
wheelhouse of the pinned dependencies at /wheels, so ``deploy/install.sh`` installs
wattmux exactly as docs/operations.md says, without the network.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NSPAWN_DIR = Path(os.environ.get("WATTMUX_NSPAWN_DIR", "/var/tmp/wattmux-nspawn"))
INIT = "/usr/lib/systemd/systemd"


def unavailable() -> str | None:
    """Why no container can run here (None when it can)."""
    if os.geteuid() != 0:
        return "systemd-nspawn needs root"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is missing"
    probe = subprocess.run(
        ["unshare", "--mount", "--pid", "--uts", "--ipc", "--fork", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"this machine forbids namespaces: {probe.stderr.strip()[:200]}"
    return None


def ensure_root() -> Path:
    """Build the root file system and wheelhouse if they are not cached; return NSPAWN_DIR."""
    subprocess.run(
        [str(REPO / "tests" / "deploy" / "nspawn_root.sh"), str(NSPAWN_DIR)],
        check=True,
        timeout=900,
    )
    return NSPAWN_DIR


def copy_checkout(target: Path) -> Path:
    """The checkout's files (tracked and new, not ignored) copied to target/src."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    src = target / "src"
    for name in filter(None, listing.split("\0")):
        origin = REPO / name
        if not origin.is_file():
            continue
        destination = src / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, destination)
    return src


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


class Container:
    """One booted container; ``sh`` runs a command inside (as root, in every namespace)."""

    def __init__(self, workdir: Path) -> None:
        self.name = f"wattmux-{uuid.uuid4().hex[:8]}"
        self.workdir = workdir
        self.log_path = workdir / "nspawn.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.init_pid = 0

    @property
    def root(self) -> Path:
        """The container's root file system as seen from the host."""
        return Path(f"/proc/{self.init_pid}/root")

    def boot(self, binds: dict[str, Path], timeout_s: float = 90.0) -> None:
        """Boot until systemd says the system runs (running or degraded)."""
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.name}")
        argv = [
            "systemd-nspawn",
            "-D",
            str(NSPAWN_DIR / "bookworm"),
            "--volatile=overlay",
            "--register=no",
            "--keep-unit",
            "--console=pipe",
            "-q",
            "-b",
            "-M",
            self.name,
        ]
        argv += [f"--bind={host}:{inside}" for inside, host in binds.items()]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while not self.init_pid:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nspawn did not boot: {self.log_tail()}")
            self.init_pid = self._find_init()
            time.sleep(0.2)
        state = ""
        while time.monotonic() < deadline:
            state = self.sh("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"systemd in the container is {state!r} after {timeout_s} s")

    def _find_init(self) -> int:
        assert self.process is not None
        pending = [self.process.pid]
        while pending:
            pid = pending.pop()
            for child in _children(pid):
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0] == INIT.encode():
                        return child
                pending.append(child)
        return 0

    def sh(
        self, command: str, *, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``sh -c command`` inside; raise with its output when check and it fails."""
        result = subprocess.run(
            ["nsenter", "-t", str(self.init_pid), "-a", "/bin/sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{command!r} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def main_pid(self, unit: str = "wattmux.service") -> int:
        """The unit's MainPID as seen from the host (0 when not running)."""
        inside = int(self.sh(f"systemctl show -P MainPID {unit}").stdout.strip() or 0)
        if not inside:
            return 0
        return self.host_pid(inside)

    def host_pid(self, inside: int) -> int:
        """The host's pid of the container's process ``inside`` (0 when gone)."""
        namespace = os.readlink(f"/proc/{self.init_pid}/ns/pid")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns" / "pid") != namespace:
                    continue
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith("NSpid:") and int(line.split()[-1]) == inside:
                        return int(entry.name)
        return 0

    def log_tail(self) -> str:
        """The end of nspawn's own output."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return ""

    def poweroff(self) -> None:
        """Shut the container down (killed after 30 s)."""
        if self.process is None:
            return
        if self.init_pid and self.process.poll() is None:
            subprocess.run(
                ["nsenter", "-t", str(self.init_pid), "-a", "systemctl", "poweroff"],
                capture_output=True,
                timeout=30,
                check=False,
            )
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.name}")


@contextlib.contextmanager
def booted() -> Iterator[Container]:
    """A fresh container with the checkout at /src and the wheelhouse at /wheels."""
    ensure_root()
    with tempfile.TemporaryDirectory(prefix="wattmux-nspawn-") as tmp:
        work = Path(tmp)
        src = copy_checkout(work)
        decoy_wheel(src / ".decoy")
        container = Container(work)
        try:
            container.boot({"/src": src, "/wheels": NSPAWN_DIR / "wheels"})
            yield container
        finally:
            container.poweroff()


DECOY = "annotated_types-99.0.0-py3-none-any.whl"  # newer than the pin: install.sh must not take it


def decoy_wheel(directory: Path) -> Path:
    """A wheel of annotated-types 99.0.0 (empty): installed only if the pins are ignored."""
    directory.mkdir(parents=True, exist_ok=True)
    info = "annotated_types-99.0.0.dist-info"
    files = {
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: annotated-types\nVersion: 99.0.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(directory / DECOY, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return directory


def install(container: Container) -> str:
    """deploy/install.sh inside, from /src, the wheelhouse (and a decoy) for index; its output."""
    result = container.sh(
        "cd /src && PIP_NO_INDEX=1 PIP_FIND_LINKS='/wheels /src/.decoy' deploy/install.sh",
        timeout=300,
    )
    return result.stdout
