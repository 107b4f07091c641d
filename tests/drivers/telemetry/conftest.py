from __future__ import annotations

from collections.abc import Iterator

import pytest

from drivers.sim.broker import Mosquitto


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    with Mosquitto() as running:
        yield running
