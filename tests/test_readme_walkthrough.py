"""README.md's "Running on a site", run as written: the commands are read out of the README, so a
README that drifts from what works fails here.  Plus the docs' promises a newcomer reads first."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scheduler.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def walkthrough() -> list[str]:
    """The lines of the first ```sh block under '## Running on a site'."""
    text = README.read_text()
    section = text.split("## Running on a site", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "no ```sh block under 'Running on a site'"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_walkthrough_has_the_steps_a_newcomer_needs() -> None:
    steps = walkthrough()
    joined = "\n".join(steps)
    for needed in (
        "python -m drivers.sim --first-address 127.77.46.200",
        "cp deploy/sim-site.toml",
        "wattmux token new",
        "wattmux run --config",
        "wattmux status",
    ):
        assert needed in joined, needed
    assert len(README.read_text().splitlines()) <= 120


def test_every_docs_link_of_the_readme_exists() -> None:
    for target in re.findall(r"\]\(([^)#]+)", README.read_text()):
        if "://" not in target:
            assert (ROOT / target).exists(), target


def test_make_targets_are_listed_once() -> None:
    for doc in (README, ROOT / "docs" / "reference.md"):
        rows = re.findall(r"^\| `(make [\w-]+)` \|", doc.read_text(), re.M)
        assert len(rows) == len(set(rows)), (doc, rows)


def test_operations_token_steps_match_what_token_new_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["token", "new", "--role", "viewer"]) == 0
    out = capsys.readouterr().out
    assert "config ([api] tokens):" in out
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert "[[api.tokens]]" not in operations
    assert "config ([api] tokens):" in operations


def _command(line: str, venv: Path) -> list[str]:
    argv = shlex.split(line.split(" #", 1)[0].rstrip(" &"))
    if argv[0].startswith(".venv/bin/"):
        argv[0] = str(venv / "bin" / argv[0].removeprefix(".venv/bin/"))
    return argv


@pytest.mark.system
def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    venv = Path(sys.executable).parent.parent
    (tmp_path / "deploy").symlink_to(ROOT / "deploy")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTMUX_")}
    background: list[subprocess.Popen[str]] = []
    token = entry = ""
    try:
        for line in walkthrough():
            if line.startswith("#"):
                # the one hand step: paste the config line `token new` printed into the config
                assert "paste the last line" in line and "tokens = [" in line, line
                config = tmp_path / "sim-site.toml"
                text = config.read_text()
                assert "tokens = [\n]" in text and entry
                config.write_text(text.replace("tokens = [\n", f"tokens = [\n{entry}\n", 1))
                continue
            if line.startswith("export "):
                for assignment in shlex.split(line.split(" #", 1)[0])[1:]:
                    name, _, value = assignment.partition("=")
                    env[name] = token if value == "TOKEN" else value
                continue
            argv = _command(line, venv)
            if line.rstrip().endswith("&"):
                process = subprocess.Popen(
                    argv,
                    cwd=tmp_path,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                background.append(process)
                if "drivers.sim" in line:  # it says when every miner listens
                    assert process.stdout is not None
                    assert '"ready": 10' in process.stdout.readline()
                continue
            if argv[1:2] == ["status"]:
                result = _status_once_mining(argv, tmp_path, env, background)
            else:
                result = subprocess.run(
                    argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
                )
            assert result.returncode == 0, (line, result.stdout, result.stderr)
            if argv[1:3] == ["token", "new"]:
                found = re.search(r"^token:\s+(\S+)$", result.stdout, re.M)
                assert found, result.stdout
                token = found.group(1)
                entry = result.stdout.rstrip().splitlines()[-1]
                assert entry.strip().startswith("{ name = ")
        assert token and background, "the walkthrough minted no token or started nothing"
    finally:
        for process in reversed(background):
            process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def _status_once_mining(
    argv: list[str], cwd: Path, env: dict[str, str], background: list[subprocess.Popen[str]]
) -> subprocess.CompletedProcess[str]:
    """`wattmux status` until the daemon has read the miners (it starts in a few seconds)."""
    deadline = time.monotonic() + 45
    while True:
        result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=30)
        if result.returncode == 0 and "10 mining" in result.stdout:
            assert "mode         auto" in result.stdout
            assert "USD/MWh" in result.stdout
            return result
        for process in background:
            assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, (result.stdout, result.stderr)
        time.sleep(0.5)
