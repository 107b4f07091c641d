"""The model objects of a configuration that are not devices: pools by name.

Devices are built by the configuration entries themselves
(``WattmuxConfig.all_devices()``, ``DeviceConfig.devices()`` ...).
"""

from __future__ import annotations

from scheduler.config.schema import WattmuxConfig
from scheduler.core.model import Pool


def pools_of(config: WattmuxConfig) -> dict[str, Pool]:
    """The configured pools as model objects keyed by name."""
    return {
        p.name: Pool(name=p.name, url=p.url, user=p.user, password=p.password.get_secret_value())
        for p in config.pools
    }
