"""deploy/install.sh stages the config, the state directory and both units; it keeps an edited config.

The test runs the real script into a staging root (``--root``) without the
steps that change the machine (user creation, virtualenv, systemctl), then
checks what an installed controller would have.  The units it writes are
also scored by systemd-analyze (test_systemd_units.py covers the originals).
"""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "install.sh"


def install(staging: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "sh",
            str(SCRIPT),
            "--root",
            str(staging),
            "--skip-user",
            "--skip-venv",
            "--no-systemctl",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_install_stages_config_state_and_units(tmp_path: Path) -> None:
    result = install(tmp_path, "--prefix", "/srv/wattmux")
    assert result.returncode == 0, result.stderr
    config = tmp_path / "etc" / "wattmux" / "wattmux.toml"
    assert config.read_text() == (ROOT / "deploy" / "wattmux.example.toml").read_text()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "var" / "lib" / "wattmux").stat().st_mode) == 0o750
    unit = (tmp_path / "etc" / "systemd" / "system" / "wattmux.service").read_text()
    assert "ExecStart=/srv/wattmux/venv/bin/wattmux run --config /etc/wattmux/wattmux.toml" in unit
    assert "/opt/wattmux" not in unit
    failsafe = (tmp_path / "etc" / "systemd" / "system" / "wattmux-failsafe.service").read_text()
    assert "ExecStart=/srv/wattmux/venv/bin/wattmux failsafe" in failsafe


def test_install_is_idempotent_and_keeps_an_edited_config(tmp_path: Path) -> None:
    assert install(tmp_path).returncode == 0
    config = tmp_path / "etc" / "wattmux" / "wattmux.toml"
    config.write_text("# edited by the operator\n")
    second = install(tmp_path)
    assert second.returncode == 0, second.stderr
    assert config.read_text() == "# edited by the operator\n"
    assert "keeping the existing" in second.stdout


def test_install_rejects_bad_options(tmp_path: Path) -> None:
    assert install(tmp_path, "--prefix", "relative/path").returncode == 2
    assert install(tmp_path, "--frobnicate").returncode == 2
