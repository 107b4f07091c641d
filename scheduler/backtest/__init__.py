"""Replays market history through the policies: engine, bounds, 4CP, plot, CLI."""
