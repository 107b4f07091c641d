"""The demo's live screen in an 80x24 terminal (a real pty): nothing wraps, price and site power
stay on screen, the token stays visible and in the scrollback, operator changes show."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from scheduler.cli.main import main
from tests.conftest import free_port

pytestmark = pytest.mark.system

TOKEN = "demo-screen-token-0123456789abcdefghijklmnopq"
CLEAR = "\x1b[H\x1b[2J"
ENTER_ALT, LEAVE_ALT = "\x1b[?1049h", "\x1b[?1049l"


def read_for(fd: int, seconds: float) -> str:
    chunks: list[bytes] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunks.append(os.read(fd, 65536))
            except OSError:  # the child closed the pty
                break
    return b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def last_frame(text: str) -> list[str]:
    frames = [f for f in text.split(CLEAR) if "power price" in f]
    assert frames, text[-2000:]
    return frames[-1].split(LEAVE_ALT)[0].rstrip("\n").split("\n")


def test_the_live_screen_fits_80x24_and_keeps_the_token() -> None:
    listen = f"127.0.0.1:{free_port()}"
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    command = [
        sys.executable, "-m", "scheduler.cli.main", "demo", "--asics", "20", "--speed", "3000",
        "--listen", listen, "--sim-port", str(free_port("127.77.0.1")), "--token", TOKEN,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}  # the pty's size
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    try:
        text = read_for(master, 8)
        api = ["--url", f"http://{listen}", "--token", TOKEN]
        assert main(["curtail", "--kw", "30", "--for", "20m", *api]) == 0
        assert main(["override", "s21-001", "sleep", "--for", "1h", *api]) == 0
        text += read_for(master, 4)
        frame = last_frame(text)
        process.send_signal(signal.SIGINT)
        text += read_for(master, 10)
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    assert process.returncode == 0, text[-3000:]
    before_screen = text.split(ENTER_ALT)[0]
    assert f"admin token {TOKEN}" in before_screen  # in the scrollback from the start
    assert f"admin token {TOKEN}" in text.split(LEAVE_ALT)[-1]  # and again when it ends
    assert len(frame) <= 23 and all(len(line) <= 80 for line in frame), "\n".join(frame)
    assert frame[1].startswith("power price") and frame[2].startswith("site power"), frame
    screen = "\n".join(frame)
    assert f"token        {TOKEN}" in screen
    assert re.search(r"control +mode auto +curtail 30 kW \(\d+ min left\) +overrides 1", screen), (
        screen
    )
    market = re.search(r"market (2024-08-\d\d) \d\d:\d\d", frame[0])
    assert market, frame[0]
    decisions = [line for line in frame if re.match(r" \d\d-\d\d \d\d:\d\d ", line)]
    assert decisions, screen
    assert all(line[1:6] in {"08-19", "08-20", "08-21"} for line in decisions), decisions
    assert "Traceback" not in text
