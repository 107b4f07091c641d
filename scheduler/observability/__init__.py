"""Prometheus metrics and GPU telemetry gauges."""
