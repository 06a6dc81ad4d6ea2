"""How reports round their figures."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal


def rounded(value: float, digits: int = 2) -> float:
    """``value`` to ``digits`` decimals, a half away from zero as people round (90.125 →
    90.13), where ``round`` gives 90.12 (binary floats, half to even)."""
    step = Decimal(1).scaleb(-digits)
    return float(Decimal(repr(value)).quantize(step, rounding=ROUND_HALF_UP))
