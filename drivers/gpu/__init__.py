"""GPU node telemetry: NVML on the node, a dcgm-exporter scrape, or a registered source."""
