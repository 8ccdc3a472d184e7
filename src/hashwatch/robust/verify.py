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

from hashwatch.robust.geometry import (
    MODELS,
    TransformSummary,
    describe_transform,
    fit_local,
    frame_share,
)
from hashwatch.robust.kpcore import _np_greedy, hamming_rows, kept_tests, knn_pairs
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
    # share of the query's frame the known picture covers (its outline mapped by the
    # transform and clipped to the frame: geometry.frame_share), for a passing verdict only:
    # under PART_OF_FRAME it is one picture among others (a collage cell), and the later
    # stages still search the rest of the frame
    frame_share: float | None = field(default=None, compare=False, repr=False)

    @property
    def whole_frame(self) -> bool:
        """A match that covers at least PART_OF_FRAME of the query's frame (or whose share is
        unknown): later stages of :func:`search_in_stages` are not needed after it."""
        return self.ok and (self.frame_share is None or self.frame_share >= PART_OF_FRAME)

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
    PROSAC screen samples them in this order). A match is kept when it is, in the stable
    order by distance, both the first of its query row and the first of its stored row."""
    return _np_greedy(np.asarray(dist), np.asarray(qi), np.asarray(ki))


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
    d, row_min = hamming_rows(qd, k.desc)
    # Only query descriptors with a stored one within the radius can form a pair (~1 in 10
    # against a nominee): the others are dropped before the k nearest are picked.
    # argpartition orders each row on its own, so a row keeps the picks (and their order,
    # which breaks distance ties in greedy_pairs) it had in the whole matrix.
    rows = np.flatnonzero(row_min <= radius)
    d = d[rows]
    kk = min(knn, d.shape[1])
    j = np.argpartition(d, kk - 1, axis=1)[:, :kk] if kk < d.shape[1] else \
        np.broadcast_to(np.arange(d.shape[1]), d.shape)
    # the picks within the radius, then greedy_pairs (in C when the extension is built)
    return knn_pairs(d, j, rows, radius, len(q.desc))


def verify(q: LocalFeatures, k: LocalFeatures, known_hashes: Sequence[KnownHash] | Callable[
        [], Sequence[KnownHash]], *, pairs: np.ndarray | None = None, scene_all: bool = False
           ) -> LocalVerdict:
    """Verdict on one candidate: geometric check of ``pairs`` (default
    :func:`candidate_pairs`), then the scene check against the candidate's stored PDQ views
    when geometry passes with enough inliers (``scene_all``: whenever a transform was found, to
    measure the check on non-matches). ``known_hashes`` may be a callable, called only when
    the scene check runs. Without ``scene_all`` the scene check stops at its first proof
    (``scene_check(full=False)``: the same verdict, inliers and transform; the verdict's
    :class:`SceneCheck` then has ``complete`` False); with it, every scene check measures
    both tests."""
    if pairs is None:
        pairs = candidate_pairs(q, k)
    n, sane, m = fit_local(q, k, pairs)
    scene = None
    if m is not None and (scene_all or (sane and n >= LOCAL_MIN_INLIERS)):
        hashes = known_hashes() if callable(known_hashes) else known_hashes
        scene = scene_check(q, k, m, hashes, full=scene_all)
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
                scene2 = scene_check(q, k, m2, hashes, full=scene_all)
                if scene2.ok:
                    n, sane, scene, m = n2, sane2, scene2, m2
                    break
    v = LocalVerdict(n, sane, scene)
    if v.ok and m is not None:
        # a verified transform is finite and regular; never fail a match on its description
        with suppress(ValueError):
            v = replace(v, fit=describe_transform(m, k.size),
                        frame_share=frame_share(m, k.size, q.size))
    return v


# The small-picture stage searches each of its boxes alone while nothing matched (a picture
# filling a tenth of the frame gets few of the votes of a search over a dozen boxes), then, while
# still nothing matched, the mirrored small-picture pass: its boxes together, then each mirrored
# box alone (a mirrored picture in a grid, a collage or pasted on a photograph; issue 11). Every
# nominee verified is a chance for a false match, so the stage's nominees are bounded: at most
# SMALL_BOXES_ALONE boxes alone, each verifying its SMALL_BOX_NOMINEES best-voted nominees,
# MIRRORED_TOGETHER nominees of the mirrored boxes together and MIRRORED_BOXES_ALONE mirrored
# boxes alone of MIRRORED_BOX_NOMINEES each. Against 60 known images 35 of the 36 pictures a
# box alone found were that box's first nominee, 1 its second (BENCHMARKS.md, issue 10, "The
# small-picture stage's nominees bounded"); with 1 nominee per plain box, pip30-photo lost that
# query, so the plain boxes keep 2 and the mirrored pass adds 8 to the ceiling (40 -> 48;
# BENCHMARKS.md, issue 11, "Mirrored pictures that fill part of the frame").
SMALL_BOXES_ALONE = 8
SMALL_BOX_NOMINEES = 2
MIRRORED_TOGETHER = 4
MIRRORED_BOXES_ALONE = 4
MIRRORED_BOX_NOMINEES = 1


# A keypoint match covering less than this share of the query's frame is one picture among
# others (a 2x2 collage cell covers ~0.23, one picture of two side by side ~0.5): the next
# stages still run after it (a mirrored picture beside unmirrored known ones in a collage must
# not be lost because they matched first), inside the same nominee ceiling.
PART_OF_FRAME = 0.5


def nominee_ceiling(top: int) -> int:
    """The most (stage, nominee) pairs one query's :func:`search_in_stages` verifies when each
    whole stage verifies ``top`` nominees: plain, mirrored and the small-picture boxes
    together (3 x ``top``), SMALL_BOXES_ALONE boxes alone of SMALL_BOX_NOMINEES each, the
    mirrored boxes together (MIRRORED_TOGETHER) and MIRRORED_BOXES_ALONE mirrored boxes alone
    of MIRRORED_BOX_NOMINEES each (48 at ``top`` 8). The per-query false-match rate is this
    times the per-pair rate (a union bound); :func:`search_in_stages` also holds it as a
    hard cap."""
    return (3 * top + SMALL_BOXES_ALONE * SMALL_BOX_NOMINEES + MIRRORED_TOGETHER
            + MIRRORED_BOXES_ALONE * MIRRORED_BOX_NOMINEES)


def _better(a: LocalVerdict, b: LocalVerdict) -> bool:
    return (a.ok, a.checks_pass, a.inliers) > (b.ok, b.checks_pass, b.inliers)


def search_in_stages(q: LocalFeatures,
                     search: Callable[[LocalFeatures, int | None], dict[int, LocalVerdict]],
                     *, small: bool = True, top: int = 8) -> dict[int, LocalVerdict]:
    """Run a keypoint search (``search(features, n)``: known id -> verdict for the ``n``
    best-voted nominees, nomination and verification; ``n`` None: the caller's own count,
    which must be ``top``) over the query's passes as stages, each only when the ones before
    matched nothing or only pictures that fill part of the frame (less than PART_OF_FRAME:
    :attr:`LocalVerdict.whole_frame`; a collage of known pictures, one of them mirrored),
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
       with SMALL_BOX_NOMINEES nominees);
    4. with ``small`` and a grey working picture, the mirrored small-picture pass
       (``small_pass(q, mirror=True)``, computed only now): its boxes together
       (MIRRORED_TOGETHER nominees), then the first MIRRORED_BOXES_ALONE boxes alone
       (MIRRORED_BOX_NOMINEES each).

    Within the small-picture stages, the boxes alone stop at the stage's first match. The
    nominees verified over all stages never exceed :func:`nominee_ceiling` (``top``): the
    counts asked for are capped by what is left of it."""
    t, n = tile_count(q), len(q.desc)
    a, b = mirrored_rows(q)
    stages: list[LocalFeatures | None] = [subset(q, np.arange(a))]
    if b > a:
        stages.append(subset(q, np.arange(a, b)))
    view = isinstance(q.extra.get("view"), np.ndarray)
    if small:
        stages.append(subset(q, np.arange(n - t, n)) if t else None)
        if view:
            stages.append(None)  # the mirrored small-picture pass, computed when reached
    left = nominee_ceiling(top)
    out: dict[int, LocalVerdict] = {}
    for i, stage in enumerate(stages):
        # a later stage runs while nothing matched, or only pictures that fill part of the
        # frame did (LocalVerdict.whole_frame)
        if i and any(v.whole_frame for v in out.values()):
            break
        small_stage = small and i >= len(stages) - 1 - view
        mirror = small and view and i == len(stages) - 1
        if stage is None:
            if not view:
                break
            stage = small_pass(q, mirror=mirror)
        if len(stage.desc) == 0:
            continue
        # the small-picture passes: boxes together, then each on its own (small_stages)
        parts, wants = [stage], [None]
        if small_stage:
            parts = small_stages(stage)
            together = bool(parts) and bool(parts[0].extra.get("together"))
            if mirror:
                parts = parts[:int(together) + MIRRORED_BOXES_ALONE]
                wants = [MIRRORED_TOGETHER if j == 0 and together else MIRRORED_BOX_NOMINEES
                         for j in range(len(parts))]
            else:
                parts = parts[:1 + SMALL_BOXES_ALONE]
                wants = [None if j == 0 else SMALL_BOX_NOMINEES for j in range(len(parts))]
        before = {k for k, v in out.items() if v.ok}
        for j, (part, want) in enumerate(zip(parts, wants, strict=True)):
            # a stage's own searches (boxes alone) stop at its first match
            if j and any(v.ok for k, v in out.items() if k not in before):
                break
            need = top if want is None else want
            if left <= 0:
                return out
            if need > left:
                want = need = left
            left -= need
            for kid, v in search(part, want).items():
                if kid not in out or _better(v, out[kid]):
                    out[kid] = v
    return out
