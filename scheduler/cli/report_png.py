"""The PNG of a report: the site's cumulative gain over always-on, day by day.

With matplotlib installed (``pip install 'wattmux[plot]'``) the chart has axes,
dates and a title.  Without it a plain chart is written by hand (zlib and the
PNG format only): the cumulative gain as a line over a zero line, green where
it is above always-on and red below, without text; the caller says so.
"""

from __future__ import annotations

import itertools
import logging
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

WIDTH, HEIGHT, MARGIN = 800, 400, 20
BACKGROUND = (255, 255, 255)
AXIS = (150, 150, 150)
ABOVE = (30, 140, 60)
BELOW = (200, 40, 40)


def write_gain_png(days: Sequence[str], cumulative: Sequence[float], path: Path) -> bool:
    """Write the chart; True with matplotlib (labelled), False for the plain chart."""
    try:
        import matplotlib

        # matplotlib logs its font cache build at INFO: not the operator's business
        logging.getLogger("matplotlib").setLevel(logging.WARNING)
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        path.write_bytes(plain_chart_png(cumulative))
        return False
    figure, axes = plt.subplots(figsize=(10, 4), dpi=100)
    axes.plot(list(days), list(cumulative), color="tab:green", marker="o")
    axes.axhline(0.0, color="grey", linewidth=0.8)
    axes.set_title("cumulative gain over always-on")
    axes.set_ylabel("USD")
    axes.tick_params(axis="x", labelrotation=45)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def plain_chart_png(values: Sequence[float]) -> bytes:
    """An RGB PNG of values as a polyline over the zero line (no text)."""
    pixels = [bytearray(BACKGROUND * WIDTH) for _ in range(HEIGHT)]
    low = min(0.0, *values) if values else 0.0
    high = max(0.0, *values) if values else 1.0
    span = (high - low) or 1.0

    def y_of(value: float) -> int:
        return round(HEIGHT - MARGIN - (value - low) / span * (HEIGHT - 2 * MARGIN))

    def x_of(index: int) -> int:
        steps = max(len(values) - 1, 1)
        return round(MARGIN + index / steps * (WIDTH - 2 * MARGIN))

    def put(x: int, y: int, color: tuple[int, int, int]) -> None:
        if 0 <= x < WIDTH and 0 <= y < HEIGHT:
            pixels[y][3 * x : 3 * x + 3] = bytes(color)

    zero = y_of(0.0)
    for x in range(MARGIN, WIDTH - MARGIN):
        put(x, zero, AXIS)
    points = [(x_of(i), y_of(v), v) for i, v in enumerate(values)]
    if len(points) == 1:
        points.append((WIDTH - MARGIN, points[0][1], points[0][2]))
    for (x0, y0, v0), (x1, y1, v1) in itertools.pairwise(points):
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for step in range(steps + 1):
            x = x0 + (x1 - x0) * step // steps
            y = y0 + (y1 - y0) * step // steps
            color = ABOVE if (v0 + (v1 - v0) * step / steps) >= 0 else BELOW
            for dy in (-1, 0, 1):
                put(x, y + dy, color)
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", WIDTH, HEIGHT, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )
