"""Shared test fixtures: free loopback ports, the soak switch, the system-test guard."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.slurm_cluster import SlurmCluster


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-soak", action="store_true", help="run the long soak tests")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: long-running test, only with --run-soak (make soak)")
    config.addinivalue_line(
        "markers",
        "system: starts a process or needs an external binary (mosquitto, Slurm, Prometheus, "
        "promtool, systemd-analyze, a wattmux or simulator subprocess); make unit leaves these out",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with make soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


class _NoProcess(subprocess.Popen):  # type: ignore[type-arg]
    """Stands in for subprocess.Popen in a test without the system mark.

    ctypes.util.find_library may run ldconfig to find libc (scheduler/control/memory.py):
    a look-up of the standard library's, not a process the test starts.
    """

    def __new__(cls, *args: object, **kwargs: object) -> _NoProcess:
        if sys._getframe(1).f_globals.get("__name__") == "ctypes.util":
            return super().__new__(cls)
        pytest.fail(
            "this test starts a process: mark it @pytest.mark.system (CONTRIBUTING.md, test markers)",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _processes_only_in_system_tests(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test that starts a process (subprocess or asyncio's) must carry the system mark."""
    if request.node.get_closest_marker("system") is None:
        monkeypatch.setattr(subprocess, "Popen", _NoProcess)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on host a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A real one-host Slurm cluster (4 fake GPUs) for the session; skipped with the reason if it cannot run."""
    from tests.slurm_cluster import ClusterUnavailable, SlurmCluster

    # munged insists that every folder above its socket is world-searchable; pytest's
    # base temp folder is 0700, so the cluster lives in a folder of its own.
    directory = Path(tempfile.mkdtemp(prefix="wattmux-slurm-"))
    directory.chmod(0o755)
    cluster = SlurmCluster(directory)
    try:
        cluster.start()
    except ClusterUnavailable as exc:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
        pytest.skip(f"real Slurm cluster unavailable: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    """The session's cluster, with no jobs or reservations and the node idle before and after."""
    slurm_cluster.reset()
    yield slurm_cluster
    slurm_cluster.reset()
