"""The upper quantile of a Poisson count, written out because it is twenty lines and scipy
would be a heavy dependency for them."""

from __future__ import annotations

import math
from typing import Final

_MAX_LAMBDA: Final = 1e6


def poisson_quantile(expected: float, miss: float) -> int:
    """The least k with P(N <= k) >= 1 - miss for N ~ Poisson(expected): hold k spares and
    more than k requests arrive with probability at most `miss`."""
    if not 0.0 < miss < 1.0:
        raise ValueError(f"miss must lie in (0, 1), got {miss}")
    if not math.isfinite(expected) or expected < 0.0 or expected > _MAX_LAMBDA:
        raise ValueError(f"expected must lie in [0, {_MAX_LAMBDA:g}], got {expected}")
    if expected == 0.0:
        return 0
    goal = 1.0 - miss
    # Sum the pmf upward from its mode's left tail; in log space so large means do not
    # underflow exp(-expected).
    log_lambda = math.log(expected)
    start = max(0, int(expected - 12.0 * math.sqrt(expected) - 12.0))
    # The mass below `start` is negligible next to any miss target worth asking for.
    cumulative = 0.0
    k = start
    while True:
        cumulative += math.exp(k * log_lambda - expected - math.lgamma(k + 1))
        if cumulative >= goal:
            return k
        k += 1
