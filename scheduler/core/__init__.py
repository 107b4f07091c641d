"""The shared vocabulary and pure economics: models, hardware, site limits, fleet state."""
