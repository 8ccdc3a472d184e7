"""The scale study: the robust matcher with the evaluation's known images placed among 10^5 to
10^6 generated known images (:mod:`hashwatch.scaleset`), as ``benchmarks/scale_study.py``
runs it.

Queries are exactly those of ``hashwatch eval`` (:func:`hashwatch.evaluate.make_query`: every
known image under every edit, the collage partners and fillers drawn the same way) plus every
distractor of :func:`hashwatch.scaleset.study_split` (photographs disjoint from the known images
and from the scale set's sources). They are computed once (:func:`build_queries`, resumable):
the hash-tier views of each query and, when its own known image is not found by the hash tier,
its keypoints and grey working picture for the keypoint tier.

At each list size N (:func:`run_size`) the known set is the evaluation's known images plus the
first N scale images; the matcher's two tiers are built as the product builds them (the PDQ
views in :class:`hashwatch.index.HammingIndex`, the keypoint sets in
:class:`hashwatch.robust.keypoint_index.KeypointIndex`) and every query runs the cascade (hash
tier; keypoint tier only when no hash route matched; each nominee verified pairwise with the
geometric and scene checks, :func:`hashwatch.robust.verify.verify`).

What counts: a query is *found* when its own known image matches. Any other match is a false
match, except a collage partner the query shows (neither true nor false, as in the evaluation).
Scale images are made only from source photographs, so no scale image shows a query's picture:
every match of a query on a scale image is false, and every match of a distractor is false.

The package, by job: :mod:`~hashwatch.scalestudy.queries` (the queries, computed once),
:mod:`~hashwatch.scalestudy.synthetic` (known sets beyond the generated images),
:mod:`~hashwatch.scalestudy.cascade` (one list size after another: build, search, count),
:mod:`~hashwatch.scalestudy.results` (what a size measured), :mod:`~hashwatch.scalestudy.summary`
(the write-up), :mod:`~hashwatch.scalestudy.nomination` (index-only nomination at 2*10^7),
:mod:`~hashwatch.scalestudy.growth` (adding a month of known images) and
:mod:`~hashwatch.scalestudy.measure` (RSS, folder sizes, percentiles).
"""

from __future__ import annotations

from hashwatch.scalestudy.cascade import run_size, run_sizes
from hashwatch.scalestudy.growth import add_month, feature_rate
from hashwatch.scalestudy.measure import pct
from hashwatch.scalestudy.nomination import nominate
from hashwatch.scalestudy.queries import (
    Query,
    QueryCache,
    StudySet,
    build_queries,
    describe_query,
    load_study_set,
)
from hashwatch.scalestudy.results import SizeResult, load_result, save_result
from hashwatch.scalestudy.results import _merge as _merge  # private, the tests import it
from hashwatch.scalestudy.summary import (
    MUST_HAVE,
    SizeSummary,
    chance_alignments,
    fit_affine,
    fit_power,
    scene_alignments,
    summarise_size,
)
from hashwatch.scalestudy.synthetic import SCALE_ID0, SYNTH_ID0, add_synthetic, recombine

__all__ = [
    "MUST_HAVE",
    "SCALE_ID0",
    "SYNTH_ID0",
    "Query",
    "QueryCache",
    "SizeResult",
    "SizeSummary",
    "StudySet",
    "add_month",
    "add_synthetic",
    "build_queries",
    "chance_alignments",
    "describe_query",
    "feature_rate",
    "fit_affine",
    "fit_power",
    "load_result",
    "load_study_set",
    "nominate",
    "pct",
    "recombine",
    "run_size",
    "run_sizes",
    "save_result",
    "scene_alignments",
    "summarise_size",
]
