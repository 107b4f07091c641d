"""GPU node telemetry: NVML on the node, or a dcgm-exporter scrape."""
