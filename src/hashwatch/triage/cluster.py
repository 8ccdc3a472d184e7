"""Near-duplicate groups of unknown images: PDQ within the threshold, transitive.

Neighbours come from :class:`hashwatch.index.HammingIndex` (exact range search), groups from
union-find, so A~B and B~C put A, B and C in one group even when A and C are far apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hashwatch.index import HammingIndex
from hashwatch.matcher import hex_to_codes

__all__ = ["cluster_pdq"]


def cluster_pdq(ids: Sequence[int], pdqs: Sequence[str], threshold: int = 31,
                batch: int = 4096) -> list[list[int]]:
    """Groups of ``ids`` (every id in exactly one group, singletons included), largest first,
    ties by smallest member id; members sorted by id."""
    n = len(ids)
    if n == 0:
        return []
    id_arr = np.asarray(ids, dtype=np.int64)
    codes = hex_to_codes(list(pdqs))
    index = HammingIndex(auto_compact=False)
    # positions as index ids: union-find works on 0..n-1
    index.add(np.arange(n, dtype=np.int64), codes)
    parent = np.arange(n, dtype=np.int64)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = int(parent[root])
        while parent[x] != root:  # path compression
            parent[x], x = root, int(parent[x])
        return root

    for start in range(0, n, batch):
        hits = index.search_many(codes[start : start + batch], threshold)
        for offset, row in enumerate(hits):
            a = start + offset
            for b, _d in row:
                if b != a:
                    ra, rb = find(a), find(int(b))
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for pos in range(n):
        groups.setdefault(find(pos), []).append(int(id_arr[pos]))
    out = [sorted(g) for g in groups.values()]
    out.sort(key=lambda g: (-len(g), g[0]))
    return out
