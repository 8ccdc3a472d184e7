"""Robustness evaluation harness (``hashwatch eval`` and ``benchmarks/robustness.py``).

Known set: a seeded sample of the corpus; fillers: a seeded pool of :data:`FILLER_POOL` other
photographs that combined edits show beside or behind the known picture (grid cells,
backgrounds, the other picture of a screenshot); distractors: all the rest (never known, never a
filler); queries: every known image under every edit of :mod:`hashwatch.edits`.

The rule that keeps the counts honest: a query may hit its own known image (a true match) or the
known images it shows as collage partners (neither true nor false); a hit on any other known image
is a false match. Fillers are never known images and never distractor queries, so a filler can
neither make a query "match" through another picture nor be counted twice; a scale set built
beside the known set must leave the fillers out as well (or count a match on a scale image made
from a filler as a true copy of that filler, not as the target's match). For each method the
report gives, per edit, the recall at the method's operating point, the false matches among all
distractor x known pairs (and among edited queries that hit the wrong known image), the
distance distributions (PNG) and an extrapolated false-match rate per pair.

Methods are cumulative, one route added at a time, all computed from one pass:
``pdq`` (full vs full <= 31) -> ``+dihedral`` -> ``+trim`` -> ``+regions`` -> ``+derotate`` ->
``+crops`` (stored crops) -> ``+qcrops`` (query crops and turned crops; = the robust hash
tier) -> ``+local`` (the keypoint tier as the matcher runs it: the
keypoint index nominates, each nominee gets the geometric and scene checks; the full matcher).
``partner`` (partner mode): the known set as a partner receives it, added to a custodian
database, exported to CSV (hashes only), imported into a fresh database and matched there by
the Matcher: the hash tier with every exported view and no keypoints (:class:`PartnerList`).

False-match extrapolation (per route): the per-pair minimum distance over all variant pairs of
that route, over every distractor x known pair, is fitted in its lower tail by a normal
distribution through two empirical quantiles (p=1e-3 and p=1e-2; the fit that gives the higher
rate at the threshold is kept, which is the conservative choice when the tail is heavier than
normal). The per-pair rate of a method is the sum over its routes (union bound). The local tier
adds P(pair reaches LOCAL_MIN_INLIERS) x P(chance alignment passes the scene check): the first
from a geometric-tail fit of the inlier counts of all distractor pairs (geometric check alone),
the second from the scene-check measurements of every distractor candidate that got a transform
(normal lower-tail fit of the aligned PDQ distance, exponential tail fit of the re-detected
share; the two tests are summed, a union bound). The product assumes that how many keypoints a
chance alignment gathers and how well the aligned pictures agree are independent.
"""

from __future__ import annotations

from hashwatch.evaluate.corpus import (
    CORPUS_ENV,
    FILLER_POOL,
    IMAGE_EXT,
    LOAD_SIDE,
    QUICK_DISTRACTORS,
    QUICK_EDITS,
    QUICK_KNOWN,
    SKIP_DIRS,
    CorpusNotFound,
    corpus_candidates,
    corpus_files,
    load_pixels,
    quick_edits,
    resolve_corpus,
    split_eval,
    split_fillers,
    split_known,
)
from hashwatch.evaluate.rates import (
    BIG,
    _norm_isf,
    _norm_sf,
    local_tail_rate,
    share_tail_rate,
    tail_rate,
)
from hashwatch.evaluate.report import (
    Summary,
    _rate_cell,
    markdown,
    plot,
    summarise,
    write_report,
)
from hashwatch.evaluate.run import (
    ROUTE_STEPS,
    ROUTES,
    EvalConfig,
    EvalResult,
    KnownSet,
    PartnerList,
    Prepared,
    _bits,
    _local_runs,
    _score,
    _thr,
    geometric_level,
    local_level,
    make_query,
    method_routes,
    prepare_known,
    prepare_query,
    run_eval,
)

__all__ = [
    "IMAGE_EXT",
    "LOAD_SIDE",
    "SKIP_DIRS",
    "CORPUS_ENV",
    "CorpusNotFound",
    "corpus_candidates",
    "resolve_corpus",
    "corpus_files",
    "split_known",
    "QUICK_KNOWN",
    "QUICK_DISTRACTORS",
    "QUICK_EDITS",
    "quick_edits",
    "FILLER_POOL",
    "split_fillers",
    "split_eval",
    "load_pixels",
    "ROUTE_STEPS",
    "ROUTES",
    "_thr",
    "Prepared",
    "_bits",
    "KnownSet",
    "local_level",
    "geometric_level",
    "prepare_known",
    "prepare_query",
    "EvalConfig",
    "EvalResult",
    "method_routes",
    "_score",
    "_local_runs",
    "PartnerList",
    "make_query",
    "run_eval",
    "BIG",
    "_norm_sf",
    "_norm_isf",
    "tail_rate",
    "local_tail_rate",
    "share_tail_rate",
    "Summary",
    "summarise",
    "_rate_cell",
    "markdown",
    "plot",
    "write_report",
]
