"""How a segment's 256 bits are cut into chunks, and how a search radius is spread over them.

:func:`choose_layout` gives the chunk widths; :func:`_plan` the per-chunk thresholds of a
search (greedy over convex marginal costs of the cost model below), or None when reading every
code is cheaper. Multi-index hashing itself: Norouzi, Punjani and Fleet, "Fast Search in
Hamming Space with Multi-Index Hashing" (CVPR 2012); see :mod:`hashwatch.index`.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

CODE_BYTES = 32
CODE_BITS = 256

# Relative costs (measured on x86-64, 20M codes): one bucket probe (random read of the offset
# table), one candidate (posting read + random code read + popcount), one code of a linear scan.
_COST_PROBE = 1.0
_COST_CAND = 1.0
_COST_SCAN = 0.08


def choose_layout(n: int, chunk_bits: int | None = None) -> tuple[int, ...]:
    """Chunk widths for a segment of ``n`` codes: chunks of about log2(n) bits covering 256 bits.

    One bucket then holds about one code, which balances probes against candidates.
    """
    if chunk_bits is None:
        chunk_bits = int(round(math.log2(max(n, 2))))
    b = max(8, min(24, int(chunk_bits)))
    m = math.ceil(CODE_BITS / b)
    base, extra = divmod(CODE_BITS, m)
    return tuple([base + 1] * extra + [base] * (m - extra))


def _plan(
    widths: tuple[int, ...], n: int, radius: int, allow_scan: bool = True
) -> np.ndarray | None:
    """Per-chunk thresholds with sum(t_i + 1) >= radius + 1 at least estimated cost, or None
    when a linear scan is cheaper (and allowed)."""
    scan_cost = _COST_SCAN * n if allow_scan else math.inf
    unit = [_COST_PROBE + _COST_CAND * n / float(1 << w) for w in widths]
    t = [-1] * len(widths)
    heap = [(unit[i], i) for i in range(len(widths))]
    heapq.heapify(heap)
    total = 0.0
    for _ in range(radius + 1):
        cost, i = heapq.heappop(heap)
        total += cost
        if total > scan_cost:
            return None
        t[i] += 1
        k = t[i] + 1
        if k <= widths[i]:
            heapq.heappush(heap, (math.comb(widths[i], k) * unit[i], i))
    return np.asarray(t, dtype=np.int32)
