"""The SQLite store: the loop's journal and the operator's durable state."""
