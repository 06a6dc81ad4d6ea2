"""One measured run: how many, how long, and (when recorded) each operation's latency.

Every figure in the bench, a Ticketline one or a physical limit, is a :class:`Result`, so
the report can put any two side by side (rate against rate, p99 against p99).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Result:
    """``count`` successful operations in ``seconds`` of wall time; ``latencies`` (seconds,
    one per successful operation) when the run recorded them; ``errors`` failed ones
    (non-2xx answers, exceptions). ``detail`` holds anything worth a note (status counts,
    settings of the run)."""

    count: int
    seconds: float
    latencies: list[float] = field(default_factory=list, repr=False)
    errors: int = 0
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    def latency(self, q: float) -> float | None:
        """The ``q``-th percentile latency in seconds, None when none were recorded."""
        return percentile(sorted(self.latencies), q)

    @property
    def p50(self) -> float | None:
        return self.latency(50)

    @property
    def p95(self) -> float | None:
        return self.latency(95)

    @property
    def p99(self) -> float | None:
        return self.latency(99)

    def summary(self) -> dict[str, Any]:
        """Plain numbers (latencies in milliseconds) for notes and JSON."""
        ordered = sorted(self.latencies)

        def ms(q: float) -> float | None:
            value = percentile(ordered, q)
            return None if value is None else round(value * 1000, 3)

        return {
            "count": self.count,
            "seconds": round(self.seconds, 4),
            "rate": round(self.rate, 2),
            "errors": self.errors,
            "p50_ms": ms(50),
            "p95_ms": ms(95),
            "p99_ms": ms(99),
            **({"detail": self.detail} if self.detail else {}),
        }

    def describe(self) -> str:
        """One line for progress output."""
        parts = [f"{self.count} in {self.seconds:.2f} s = {self.rate:,.0f}/s"]
        if self.latencies:
            s = self.summary()
            parts.append(f"p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms, p99 {s['p99_ms']} ms")
        if self.errors:
            parts.append(f"{self.errors} errors")
        return "; ".join(parts)


def combine(results: Iterable[Result]) -> Result:
    """Several runs of the same thing (e.g. halves before and after another figure, or
    interleaved rounds) as one: counts and seconds added, latencies pooled; in ``detail``
    nested counts (statuses) and ``*_seconds`` figures are added, anything else is the
    last run's."""
    results = list(results)
    detail: dict[str, Any] = {}
    for r in results:
        for key, value in r.detail.items():
            if isinstance(value, dict):
                merged = detail.setdefault(key, {})
                for k, v in value.items():
                    merged[k] = merged.get(k, 0) + v if isinstance(v, int | float) else v
            elif key.endswith("_seconds") and isinstance(value, int | float):
                detail[key] = detail.get(key, 0) + value
            else:
                detail[key] = value
    return Result(
        count=sum(r.count for r in results),
        seconds=sum(r.seconds for r in results),
        latencies=[x for r in results for x in r.latencies],
        errors=sum(r.errors for r in results),
        detail=detail,
    )


async def timed(fn: Callable[[], Awaitable[int]]) -> Result:
    """A Result for a coroutine that does the work and returns how many it did."""
    started = time.perf_counter()
    count = await fn()
    return Result(count, time.perf_counter() - started)


class Deadline:
    """Bounds a loop by time as well as by count: ``expired()`` once ``seconds`` passed."""

    def __init__(self, seconds: float) -> None:
        self.at = time.perf_counter() + seconds

    def expired(self) -> bool:
        return time.perf_counter() >= self.at
