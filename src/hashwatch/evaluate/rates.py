"""False-match rates extrapolated from the lower tail of the per-pair distributions (see the
package docstring for the method)."""

from __future__ import annotations

import math

import numpy as np

# --- analysis ------------------------------------------------------------------------------

# distance of a pair with no variant pair on a route (never a match)
BIG = 255



def _norm_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _norm_isf(p: float) -> float:
    # inverse of the upper tail by bisection (no scipy)
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if _norm_sf(mid) > p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def tail_rate(dist: np.ndarray, threshold: int) -> tuple[float, float, float]:
    """Extrapolated P(distance <= threshold) for unrelated pairs: normal fitted through the
    empirical quantiles at p=1e-3 and 1e-2 (also 1e-2/1e-1), the larger estimate is kept.
    Returns (rate, mu, sigma) of the kept fit."""
    present = dist < BIG
    x = np.sort(dist[present].astype(np.float64))
    if len(x) < 1000:
        return float("nan"), float("nan"), float("nan")
    frac = float(present.mean())  # pairs where the route exists at all
    best = (0.0, float("nan"), float("nan"))
    for p1, p2 in ((1e-3, 1e-2), (1e-2, 1e-1)):
        q1, q2 = np.quantile(x, p1), np.quantile(x, p2)
        z1, z2 = -_norm_isf(p1), -_norm_isf(p2)  # lower-tail z scores (negative)
        if q2 <= q1:
            continue
        sigma = (q2 - q1) / (z2 - z1)
        mu = q1 - z1 * sigma
        rate = frac * _norm_sf((mu - threshold - 0.5) / sigma)
        if rate > best[0]:
            best = (rate, mu, sigma)
    return best


def local_tail_rate(inliers: np.ndarray, n_pairs: int, need: int) -> tuple[float, float]:
    """P(inliers >= need) per unrelated pair, extrapolated: the survival function of the
    geometric-check inlier counts over all distractor x known pairs (pairs never put to the
    check count as 0) is fitted by a geometric tail, log S(k) linear in k, through the counts
    k >= 3 that at least 5 pairs reach (a 2-point similarity always has 2 "inliers").
    Returns (rate, per-inlier decay)."""
    if n_pairs == 0:
        return float("nan"), float("nan")
    x = inliers[inliers > 0]
    top = int(x.max()) if len(x) else 0
    ks = np.arange(3, top + 1)
    surv = np.array([(x >= k).sum() for k in ks], np.float64)
    ok = surv >= 5
    if ok.sum() < 2:
        # Too few chance alignments to fit a slope: only the rule-of-three bound is honest.
        return 3.0 / n_pairs, float("nan")
    b, a = np.polyfit(ks[ok], np.log(surv[ok] / n_pairs), 1)
    return float(math.exp(a + b * need)), float(math.exp(b))


def share_tail_rate(x: np.ndarray, need: float) -> float:
    """P(share >= need) among candidates, extrapolated: log of the survival function fitted
    linearly over the top decile of the shares (points that >= 5 candidates reach). Falls back
    to the rule-of-three bound when the tail is too thin to fit."""
    n = len(x)
    if n == 0:
        return float("nan")
    top = np.quantile(x, 0.9)
    grid = np.linspace(top, x.max(), 12)
    surv = np.array([(x >= g).sum() for g in grid], np.float64)
    ok = surv >= 5
    empirical = float((x >= need).sum()) / n
    if ok.sum() < 2 or np.ptp(grid[ok]) == 0:
        return max(empirical, 3.0 / n)
    b, a = np.polyfit(grid[ok], np.log(surv[ok] / n), 1)
    return max(empirical, float(math.exp(a + b * need)))
