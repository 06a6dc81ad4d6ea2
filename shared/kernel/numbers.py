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
