"""The TOML configuration: schema, loading, building devices."""
