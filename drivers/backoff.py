"""Capped exponential backoff with full jitter: the one retry-delay rule every part uses."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry ``attempt`` (1-based): uniform in [0, min(cap, base * 2**(attempt-1))]."""

    base_seconds: float = 1.0
    cap_seconds: float = 60.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def ceiling_seconds(self, attempt: int) -> float:
        """The largest delay the given attempt may wait."""
        return float(min(self.cap_seconds, self.base_seconds * 2.0 ** max(0, attempt - 1)))

    def delay_seconds(self, attempt: int) -> float:
        """A jittered delay for the given attempt (full jitter)."""
        return self.rng.uniform(0.0, self.ceiling_seconds(attempt))
