"""The operator's console: the live site, every machine and the controls, served by the API."""
