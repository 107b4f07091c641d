"""A simulated site that speaks the real protocols (demo, tests, benchmarks)."""
