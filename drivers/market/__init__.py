"""Market feeds: BTC price, difficulty and fees, power price, demand-response events."""
