"""Demand-response program clients (OpenADR 2.0b VEN)."""
