"""`wattmux demo`: a simulated site, price replay and the daemon with a live screen."""
