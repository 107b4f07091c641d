"""The driver error tree; a driver raises one of these, never returns None or {} for failure.

DriverError                 base of everything a driver raises
├── Unavailable             could not reach or read the device/feed; retry later
│   ├── Timeout             no (complete) reply within the deadline
│   └── MalformedReply      a reply arrived but could not be parsed
├── Rejected                the device answered and said no (access denied, bad command)
└── Fatal                   configuration or authentication problem; retrying will not help
"""

from __future__ import annotations


class DriverError(Exception):
    """Base class of every driver failure; ``source`` names the device or feed."""

    reason = "error"

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


class Unavailable(DriverError):
    """The device or feed could not be reached or read; try again later."""

    reason = "unavailable"


class Timeout(Unavailable):
    """No complete reply arrived before the deadline."""

    reason = "timeout"


class MalformedReply(Unavailable):
    """A reply arrived but was not what the protocol promises."""

    reason = "malformed"


class Rejected(DriverError):
    """The device understood and refused (access denied, invalid command)."""

    reason = "rejected"


class Fatal(DriverError):
    """A configuration or authentication error that retrying cannot fix."""

    reason = "fatal"
