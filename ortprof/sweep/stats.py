"""Confidence intervals over repeats, and the Pareto front of CPU vs latency.

Each repeat of a cell is a fresh process, so repeats are the independent
samples: a figure is the mean of its per-repeat values, with a Student-t 95%
interval (none from a single repeat).
"""
import math
from dataclasses import dataclass
from typing import Optional

# Two-sided 95% Student-t quantiles, t(0.975, df) for df = 1..30.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df):
    if df < 1:
        raise ValueError("a t quantile needs at least one degree of freedom")
    if df <= len(_T975):
        return _T975[df - 1]
    return 1.96 + 2.5 / df   # within 0.002 of the exact value beyond 30


@dataclass
class Estimate:
    mean: float
    n: int
    half_width: Optional[float] = None   # None: a single sample has no interval

    @property
    def low(self):
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self):
        return None if self.half_width is None else self.mean + self.half_width

    def to_json(self, digits=3):
        def rounded(value):
            return None if value is None else round(value, digits)
        return {"mean": rounded(self.mean), "ci95": [rounded(self.low), rounded(self.high)]
                if self.half_width is not None else None, "n": self.n}


def estimate(values):
    """Mean and 95% t-interval of independent samples; None for no samples."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return Estimate(mean, 1)
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return Estimate(mean, n, t975(n - 1) * math.sqrt(variance / n))


def pareto_front(points):
    """Indices of the points (cpu, latency) no other point beats on both, lower is better."""
    front = []
    for i, (cpu, latency) in enumerate(points):
        dominated = any(
            other_cpu <= cpu and other_latency <= latency and (other_cpu < cpu or other_latency < latency)
            for j, (other_cpu, other_latency) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def repeats_needed(values, target_half_width, cap):
    """Samples a figure needs for a 95% half-width within the target, judged from
    the spread seen so far (at most `cap`; the current count when it is met)."""
    current = estimate(values)
    if current is None or current.n < 2:
        return max(current.n if current else 0, 2)
    if current.half_width <= target_half_width:
        return current.n
    spread = current.half_width * math.sqrt(current.n) / t975(current.n - 1)   # the sample sd
    n = current.n
    while n < cap and t975(n - 1) * spread / math.sqrt(n) > target_half_width:
        n += 1
    return min(max(n, current.n + 1), cap)
