"""``wattmux demo`` as a user runs it: a subprocess that sleeps the fleet in a spike, wakes it, stops on Ctrl-C."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.system

COUNTS = re.compile(r"price ([\d,.-]+) USD/MWh: (\d+) mining, (\d+) asleep")


def test_demo_sleeps_in_the_spike_wakes_after_and_stops_cleanly_on_ctrl_c() -> None:
    # 5000x: the 2024-08-19 evening spike (above every break-even from 19:00) arrives after ~14 s.
    command = [
        sys.executable, "-m", "scheduler.cli.main", "demo", "--asics", "20", "--speed", "5000",
        "--no-ui", "--listen", f"127.0.0.1:{free_port()}", "--sim-port", str(free_port("127.77.0.1")),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[tuple[float, int, int]] = []
    output: list[str] = []
    deadline = time.monotonic() + 60
    assert process.stdout is not None
    try:
        for line in process.stdout:
            output.append(line)
            match = COUNTS.search(line)
            if match:
                price = float(match.group(1).replace(",", ""))
                seen.append((price, int(match.group(2)), int(match.group(3))))
            slept = any(mining == 0 for _, mining, _ in seen)
            woke_after = slept and seen[-1][1] == 20 and seen[-1][0] < 40
            if woke_after or time.monotonic() > deadline:
                break
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=20)
        output.append(rest)
    finally:
        if process.poll() is None:
            process.kill()
    text = "".join(output)
    assert process.returncode == 0, text
    assert "stopped cleanly" in text
    assert "API and /metrics on http://127.0.0.1:" in text
    assert re.search(r"console http://127\.0\.0\.1:\d+/console#token=\S{40,}", text), text
    spike = [(p, m) for p, m, _ in seen if m == 0]
    assert spike, f"the fleet never slept:\n{text}"
    assert min(p for p, _ in spike) > 100  # asleep only when power cost more than mining earned
    assert seen[-1][1] == 20, f"the fleet did not wake after the spike:\n{text}"
    assert "Traceback" not in text


def test_demo_says_clearly_when_its_port_is_taken() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "scheduler.cli.main", "demo", "--no-ui", "--listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
