"""How reports round their figures."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal


def rounded(value: float, digits: int = 2) -> float:
    """``value`` to ``digits`` decimals, a half away from zero as people round (90.125 →
    90.13), where ``round`` gives 90.12 (binary floats, half to even)."""
    if not math.isfinite(value) or abs(value) >= 1e15:  # beyond what a report rounds
        return value
    step = Decimal(1).scaleb(-digits)
    return float(Decimal(repr(value)).quantize(step, rounding=ROUND_HALF_UP)) + 0.0  # no -0.0


def percent_shown(value: float, digits: int = 2) -> float:
    """A percentage rounded as ``rounded`` does — but never to 100 or 0 when it is not:
    2 misses in 100,000 show as 99.99, not as the 100 a target of 100 % asks for."""
    shown = rounded(value, digits)
    if not 0 < value < 100:
        return shown
    step = rounded(10.0**-digits, digits)
    return min(max(shown, step), rounded(100 - step, digits))
