"""Exact Hamming range search over 256-bit codes (PDQ) with multi-index hashing.

Layout of one *segment* of n codes (positions 0..n-1):

* ``codes`` (n, 32) uint8, ``ids`` (n,) int64 ascending within each run (a freshly built
  segment is one run), ``tomb`` (n,) uint8 (1 = removed);
* the 256 bits are cut into m disjoint chunks of ``widths[i]`` bits; for every chunk a
  direct-addressed offset table (2**width + 1 uint32) and a posting list of n uint32 positions
  sorted by the chunk value (counting sort in C).

Search uses the generalised pigeonhole principle: if ``d(a, b) <= r`` and ``sum(t_i + 1) >= r + 1``
then some chunk i has ``d_i(a, b) <= t_i`` (``t_i = -1`` leaves a chunk out). Every bucket within
``t_i`` of the query's chunk is probed and every candidate is verified with a full popcount,
so results are exact for every radius 0..256. A code reached through several chunks is reported
only from the first chunk within its threshold (no hash set). The thresholds are chosen per
segment and radius by a cost model (greedy over convex marginal costs); when probing would cost
more than reading every code, the segment is scanned instead (still exact).

The index is a list of segments. ``add`` builds a new segment from the batch (the big one is
never rebuilt for an add); ``remove`` sets tombstones; small segments are merged in tiers.
When the smaller segments reach ``compact_ratio`` of the largest one, a background thread
(the C build releases the GIL) or :meth:`HammingIndex.compact` folds them into it. Big
segments keep spare capacity (untouched, so not resident) after their codes: the fold
appends there as a new id run and rebuilds the chunk tables one at a time, so it needs one
chunk table of extra memory, not a second index. When that is not possible (no spare room,
too many tombstones to purge, the layout would change, index loaded with mmap) the merge
builds a new segment and briefly holds about twice the index.

The package, by job: :mod:`~hashwatch.index.layout` (chunk widths and the cost model of a
search), :mod:`~hashwatch.index.segment` (one segment: its arrays, tables and search, through
the C extension :mod:`hashwatch._mih` or its numpy twins),
:mod:`~hashwatch.index.hamming_index` (:class:`HammingIndex`: adds, removes, merges,
queries) and :mod:`~hashwatch.index.persistence` (the index file).
"""

from __future__ import annotations

# the private names below were names of the single module this package was and stay
# importable from here (tests and BENCHMARKS.md name some); to patch one (e.g. ``_mih``),
# patch the module that uses it
from hashwatch.index.hamming_index import DEFAULT_RADIUS as DEFAULT_RADIUS
from hashwatch.index.hamming_index import HammingIndex
from hashwatch.index.hamming_index import _as_codes as _as_codes
from hashwatch.index.hamming_index import _as_ids as _as_ids
from hashwatch.index.layout import CODE_BITS as CODE_BITS
from hashwatch.index.layout import CODE_BYTES, choose_layout
from hashwatch.index.layout import _plan as _plan
from hashwatch.index.persistence import _MAGIC as _MAGIC
from hashwatch.index.segment import HAVE_C_EXTENSION
from hashwatch.index.segment import _merge as _merge
from hashwatch.index.segment import _mih as _mih
from hashwatch.index.segment import _packed as _packed
from hashwatch.index.segment import _Segment as _Segment

__all__ = ["HammingIndex", "choose_layout", "HAVE_C_EXTENSION", "CODE_BYTES"]
