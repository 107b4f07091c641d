"""The `wattmux` command line and its API client."""
