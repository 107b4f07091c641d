"""ASIC miner drivers (cgminer-family API)."""
