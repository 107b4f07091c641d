"""Push inputs: MQTT ingest of device telemetry, power prices and demand-response events."""
