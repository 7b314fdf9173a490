"""Noise: 95% bootstrap intervals for the difference of two runs, and the verdict on a delta.

Latency percentiles are resampled from each run's per-run latencies. CPU is cut
into one-second bins across the window (CPU used and run() calls started in each);
the bins are resampled, so a rate (% of a core) or a ratio (CPU-ms per inference)
gets an interval that reflects how much the CPU moved from second to second.

A delta is a change ("up"/"down") only when its interval excludes zero AND it
exceeds a floor: two recordings of the same setup differ by a few percent in
ways no within-run resampling sees (placement, frequency, a neighbour's load).
"""
import numpy as np

RESAMPLES = 2000
LEVEL = 95.0
SEED = 20240611          # fixed: the same two runs always give the same intervals

# kind of figure -> (absolute floor, relative floor): a smaller delta is noise whatever its interval
NOISE_FLOORS = {
    "pct": (1.0, 0.05),              # % of a core
    "ms_per_inference": (0.01, 0.05),  # absolute: replaced by 1% of a core per inference
    "latency_ms": (0.1, 0.05),
    "count": (1.0, 0.10),            # futex calls per inference, throttled periods, runs
    "ms": (1.0, 0.05),               # throttled ms
}

UP, DOWN, NOISE, NO_INTERVAL = "up", "down", "within noise", "no interval"


def _rng():
    return np.random.default_rng(SEED)


def _bounds(samples):
    lo, hi = np.percentile(samples, [(100 - LEVEL) / 2, 100 - (100 - LEVEL) / 2])
    return [round(float(lo), 4), round(float(hi), 4)]


def percentile_delta_interval(before_ms, after_ms, q):
    """95% interval of percentile q of AFTER minus that of BEFORE (nearest rank, as the report)."""
    if len(before_ms) < 2 or len(after_ms) < 2:
        return None
    rng = _rng()

    def resampled(values):
        values = np.asarray(values, dtype=float)
        picks = values[rng.integers(0, len(values), size=(RESAMPLES, len(values)))]
        return np.percentile(picks, q, axis=1, method="nearest")
    return _bounds(resampled(after_ms) - resampled(before_ms))


def ratio_delta_interval(before, after):
    """95% interval of sum(num)/sum(den) of AFTER minus BEFORE, each a pair of per-bin arrays
    (numerators, denominators), bins resampled with replacement."""
    if before is None or after is None or len(before[0]) < 2 or len(after[0]) < 2:
        return None
    rng = _rng()

    def resampled(numerators, denominators):
        numerators, denominators = np.asarray(numerators, float), np.asarray(denominators, float)
        picks = rng.integers(0, len(numerators), size=(RESAMPLES, len(numerators)))
        den = denominators[picks].sum(axis=1)
        return np.divide(numerators[picks].sum(axis=1), den, out=np.full(RESAMPLES, np.nan), where=den > 0)
    delta = resampled(*after) - resampled(*before)
    delta = delta[~np.isnan(delta)]
    return _bounds(delta) if len(delta) >= RESAMPLES // 2 else None


def verdict(before, after, interval, kind, absolute_floor=None):
    """"up", "down", "within noise", "no interval" (no way to tell noise), or None (not comparable).
    `absolute_floor` replaces the kind's (CPU-ms per inference: 1% of a core in the run's units)."""
    if before is None or after is None:
        return None
    delta = after - before
    absolute, relative = NOISE_FLOORS[kind]
    if absolute_floor is not None:
        absolute = absolute_floor
    if abs(delta) < max(absolute, relative * abs(before)):
        return NOISE
    if interval is None:
        return NO_INTERVAL
    if interval[0] <= 0 <= interval[1]:
        return NOISE
    return UP if delta > 0 else DOWN


def significant(label):
    """Whether a verdict counts as a change for a gate: beyond the floor, and outside the interval
    where there is one."""
    return label in (UP, DOWN, NO_INTERVAL)
