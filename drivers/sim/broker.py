"""A real mosquitto broker on a loopback port, started and stopped by tests and benchmarks."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from drivers.errors import Fatal, Unavailable


def mosquitto_binary() -> str:
    """Path of the mosquitto executable; Fatal when it is not installed."""
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise Fatal("mosquitto", "not installed: apt-get install mosquitto")
    return found


def free_loopback_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on host a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """One mosquitto process with persistence in a private directory; restartable on its port."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        extra_conf: str = "",
        directory: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_loopback_port(host)
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="wattmux-mosquitto-"))
        self.conf_path = self.directory / "mosquitto.conf"
        self.log_path = self.directory / "mosquitto.log"
        self.conf_path.write_text(
            f"listener {self.port} {self.host}\n"
            # Stay the current user (as root mosquitto would switch to 'mosquitto' and lose
            # write access to the private directory, persistence included).
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.directory}/\n"
            "autosave_interval 0\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            f"log_dest file {self.log_path}\n" + extra_conf
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_seconds: float = 10.0) -> None:
        """Start the broker and wait until it accepts connections."""
        if self.process is not None and self.process.poll() is None:
            return
        self.process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise Unavailable("mosquitto", f"exited with {self.process.returncode}: {err}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise Unavailable("mosquitto", f"not listening on {self.host}:{self.port}")

    def stop(self) -> None:
        """Stop the broker gracefully (it saves its persistence file)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()

    def restart(self) -> None:
        """Stop and start again on the same port with the same persistence."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        """Start."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop and remove the private directory."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)
