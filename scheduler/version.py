"""The wattmux version: written once, in pyproject.toml, and read from the installed metadata."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as metadata_version

UNKNOWN = "unknown"
"""The version reported by a source tree that was never installed (no package metadata)."""


def wattmux_version() -> str:
    """The installed wattmux's version (pyproject.toml's), or ``unknown`` without metadata."""
    try:
        return metadata_version("wattmux")
    except PackageNotFoundError:
        return UNKNOWN
