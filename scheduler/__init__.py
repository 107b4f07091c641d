"""wattmux scheduler: the vendor-neutral core (model, economics, policies, loop)."""
