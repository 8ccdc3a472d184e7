"""Verification of one nominated known image: tentative keypoint pairs, the geometric check and
the scene check, and the verdict the local tier acts on.

Pairs (:func:`candidate_pairs`): each query descriptor's ``LOCAL_KNN`` nearest stored
descriptors of the candidate within ``LOCAL_MATCH_RADIUS``, then greedily (closest first) one
pair per query keypoint and one per stored keypoint: the correspondences the exact store formed
(:class:`hashwatch.robust.local_store.LocalStore`), restricted to one known image. Geometry:
:func:`hashwatch.robust.geometry.fit_local` (RANSAC, Fischler and Bolles 1981, through OpenCV's
``estimateAffinePartial2D``); scene: :func:`hashwatch.robust.scene.scene_check`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace

import numpy as np

from hashwatch.robust.geometry import MODELS, TransformSummary, describe_transform, fit_local
from hashwatch.robust.kpcore import hamming_matrix, kept_tests
from hashwatch.robust.local import (
    LOCAL_KNN,
    LOCAL_MATCH_RADIUS,
    LOCAL_MIN_INLIERS,
    LocalFeatures,
    mirrored_rows,
    small_pass,
    small_stages,
    subset,
    tile_count,
)
from hashwatch.robust.routes import KnownHash
from hashwatch.robust.scene import SceneCheck, scene_check


@dataclass(frozen=True)
class LocalVerdict:
    """The local tier's judgement of one candidate known image."""

    inliers: int
    sane: bool  # spread and scale of the geometric check
    scene: SceneCheck | None  # None when not run (geometry failed)
    # what the judged known -> query transform is (:func:`hashwatch.robust.geometry.
    # describe_transform`), for a passing verdict only: a keypoint match's route names it
    fit: TransformSummary | None = field(default=None, compare=False, repr=False)

    @property
    def checks_pass(self) -> bool:
        """Geometry sane and scene check passed, whatever the inlier count."""
        return self.sane and self.scene is not None and self.scene.ok

    @property
    def ok(self) -> bool:
        return self.checks_pass and self.inliers >= LOCAL_MIN_INLIERS


def greedy_pairs(dist: np.ndarray, qi: np.ndarray, ki: np.ndarray) -> np.ndarray:
    """(n, 2) pairs (query row, stored row) kept from tentative matches: closest first, one per
    query keypoint and one per stored keypoint; returned closest first (the geometric check's
    PROSAC screen samples them in this order)."""
    order = np.argsort(dist, kind="stable")
    qi, ki = qi[order], ki[order]
    _, f1 = np.unique(ki, return_index=True)
    keep = np.zeros(len(ki), bool)
    keep[f1] = True
    _, f2 = np.unique(qi, return_index=True)
    keep2 = np.zeros(len(ki), bool)
    keep2[f2] = True
    sel = keep & keep2
    return np.stack([qi[sel], ki[sel]], axis=1).astype(np.int64)


def candidate_pairs(q: LocalFeatures, k: LocalFeatures, *, knn: int = LOCAL_KNN,
                    radius: int = LOCAL_MATCH_RADIUS) -> np.ndarray:
    """Tentative pairs (query row, stored row) between a query and one candidate's stored
    keypoints (see the module docstring). (0, 2) when either side has none.

    A candidate read from a verification record whose descriptors keep only their first
    ``k.extra["desc_bytes"]`` bytes (ORB's first tests, :func:`hashwatch.robust.keypoint_index.
    encode_verify`) is compared on those tests alone, with ``radius`` scaled to them
    (:func:`hashwatch.robust.kpcore.kept_tests`)."""
    if len(q.desc) == 0 or len(k.desc) == 0:
        return np.zeros((0, 2), np.int64)
    qd, radius = kept_tests(q.desc, radius, k)
    d = hamming_matrix(qd, k.desc)
    kk = min(knn, d.shape[1])
    j = np.argpartition(d, kk - 1, axis=1)[:, :kk] if kk < d.shape[1] else \
        np.broadcast_to(np.arange(d.shape[1]), d.shape)
    dist = np.take_along_axis(d, j, axis=1).ravel()
    qi = np.repeat(np.arange(len(q.desc)), j.shape[1])
    ki = np.asarray(j).ravel()
    good = dist <= radius
    return greedy_pairs(dist[good], qi[good], ki[good])


def verify(q: LocalFeatures, k: LocalFeatures, known_hashes: Sequence[KnownHash] | Callable[
        [], Sequence[KnownHash]], *, pairs: np.ndarray | None = None, scene_all: bool = False
           ) -> LocalVerdict:
    """Verdict on one candidate: geometric check of ``pairs`` (default
    :func:`candidate_pairs`), then the scene check against the candidate's stored PDQ views
    when geometry passes with enough inliers (``scene_all``: whenever a transform was found, to
    measure the check on non-matches). ``known_hashes`` may be a callable, called only when
    the scene check runs."""
    if pairs is None:
        pairs = candidate_pairs(q, k)
    n, sane, m = fit_local(q, k, pairs)
    scene = None
    if m is not None and (scene_all or (sane and n >= LOCAL_MIN_INLIERS)):
        hashes = known_hashes() if callable(known_hashes) else known_hashes
        scene = scene_check(q, k, m, hashes)
        if not scene.ok:
            # The model that won on inliers does not reproduce the picture: each other model
            # (similarity, affine, homography) that passes geometry gets its own scene check,
            # the first that passes wins. A pure crop must not lose what the similarity had
            # before richer models were tried; a mild keystone is fitted by the similarity
            # within 4 px at most pairs, yet rectified wrongly by more than the scene check's
            # 2 px at the far side; a stretched copy's homography picks up spurious
            # perspective terms its affine map does not have.
            for model in MODELS:
                n2, sane2, m2 = fit_local(q, k, pairs, model=model)
                if m2 is None or np.allclose(m2, m) or not (
                        scene_all or (sane2 and n2 >= LOCAL_MIN_INLIERS)):
                    continue
                scene2 = scene_check(q, k, m2, hashes)
                if scene2.ok:
                    n, sane, scene, m = n2, sane2, scene2, m2
                    break
    v = LocalVerdict(n, sane, scene)
    if v.ok and m is not None:
        # a verified transform is finite and regular; never fail a match on its description
        with suppress(ValueError):
            v = replace(v, fit=describe_transform(m, k.size))
    return v


# The small-picture stage searches each of its boxes alone while nothing matched (a picture
# filling a tenth of the frame gets few of the votes of a search over a dozen boxes). Every
# nominee verified is a chance for a false match, so the stage's nominees are bounded: at most
# SMALL_BOXES_ALONE boxes alone, each verifying its SMALL_BOX_NOMINEES best-voted nominees.
# Against 60 known images every picture a box alone found was that box's first nominee
# (BENCHMARKS.md, issue 10, "The small-picture stage's nominees bounded").
SMALL_BOXES_ALONE = 8
SMALL_BOX_NOMINEES = 2


def nominee_ceiling(top: int) -> int:
    """The most (stage, nominee) pairs one query's :func:`search_in_stages` verifies when each
    whole stage verifies ``top`` nominees: plain, mirrored and the small-picture boxes
    together (3 x ``top``), then SMALL_BOXES_ALONE boxes alone of SMALL_BOX_NOMINEES each. The
    per-query false-match rate is this times the per-pair rate (a union bound)."""
    return 3 * top + SMALL_BOXES_ALONE * SMALL_BOX_NOMINEES


def _better(a: LocalVerdict, b: LocalVerdict) -> bool:
    return (a.ok, a.checks_pass, a.inliers) > (b.ok, b.checks_pass, b.inliers)


def search_in_stages(q: LocalFeatures,
                     search: Callable[[LocalFeatures, int | None], dict[int, LocalVerdict]],
                     *, small: bool = True) -> dict[int, LocalVerdict]:
    """Run a keypoint search (``search(features, top)``: known id -> verdict for the ``top``
    best-voted nominees, nomination and verification; ``top`` None: the caller's own count)
    over the query's passes as stages, each only when the ones before matched nothing,
    keeping the better verdict per known image:

    1. the plain pass (whole picture and regions): the search as it was. The mirrored pass is
       not mixed in: its descriptors would add chance votes that push a weakly matched true
       image (a tight crop) out of the nominees, and take stored keypoints from it;
    2. the mirrored pass (:func:`hashwatch.robust.local.query_local`), when present;
    3. with ``small``, the small-picture pass (grid cells, tiles), taken from the query when it
       carries one, else computed now from its grey working picture
       (:func:`hashwatch.robust.local.small_pass`), so queries matched earlier never pay it;
       searched as :func:`hashwatch.robust.local.small_stages` gives it (its boxes together,
       then, while nothing matched, each box alone: the first SMALL_BOXES_ALONE boxes, each
       with ``top`` SMALL_BOX_NOMINEES; see :func:`nominee_ceiling`)."""
    t, n = tile_count(q), len(q.desc)
    a, b = mirrored_rows(q)
    stages: list[LocalFeatures | None] = [subset(q, np.arange(a))]
    if b > a:
        stages.append(subset(q, np.arange(a, b)))
    if small:
        stages.append(subset(q, np.arange(n - t, n)) if t else None)
    out: dict[int, LocalVerdict] = {}
    for i, stage in enumerate(stages):
        if i and any(v.ok for v in out.values()):
            break
        if stage is None:
            if not isinstance(q.extra.get("view"), np.ndarray):
                break
            stage = small_pass(q)
        if len(stage.desc) == 0:
            continue
        # the small-picture pass: its boxes together, then each on its own (small_stages)
        parts = small_stages(stage)[:1 + SMALL_BOXES_ALONE] if small and i == len(stages) - 1 \
            else [stage]
        for j, part in enumerate(parts):
            if j and any(v.ok for v in out.values()):
                break
            for kid, v in search(part, SMALL_BOX_NOMINEES if j else None).items():
                if kid not in out or _better(v, out[kid]):
                    out[kid] = v
    return out
