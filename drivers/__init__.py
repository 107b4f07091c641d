"""wattmux drivers: everything that talks to devices, feeds and queues."""
