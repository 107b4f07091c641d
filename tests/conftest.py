"""Shared test fixtures: free loopback ports, the soak switch."""

from __future__ import annotations

import shutil
import socket
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with make soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


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
