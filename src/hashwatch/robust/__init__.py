"""Robust "known image" matching: survives borders, flips, turns, small rotations, screenshots,
collages and crops, without more false matches than plain PDQ.

Two tiers, both pure functions of pixels (no store, no I/O):

* **Hash tier** (cheap, PDQ-compatible). A known image is stored as its full-image PDQ (the
  interchange hash, variant ``"full"``) plus a few extra PDQ hashes (border-trimmed picture,
  centred crops), all pointing to the same known image. A query is hashed several ways: the 8
  dihedral variants of the full and of the border-trimmed picture, each rectangular picture
  region found inside a screenshot or collage, and small de-rotations. A pair matches when any
  (query variant, known variant) pair is within that route's threshold (:data:`THRESHOLDS`). The
  plain route ``full``-``full`` keeps Meta's ``<= 31``, so plain PDQ lists work unchanged; the
  extra routes use tighter thresholds so that the summed false-match rate stays below 1e-10.
* **Local tier** (for crops at any position and larger rotations). ORB keypoints of the known
  picture (at most :data:`LOCAL_MAX_KEYPOINTS`, 256-bit descriptors that fit the same Hamming
  index as PDQ) and a geometric check: enough descriptor matches agree on one
  transform (RANSAC: a similarity, or a bounded affine map or homography for stretched, sheared
  and keystoned copies) and cover a real part of the picture. Then a scene check: geometry alone
  also accepts another photograph of the same scene taken moments later, so the query is
  warped onto the known picture's frame and must either reproduce a stored PDQ view there or
  show the stored keypoints again in place (:func:`scene_check`; stored data only, the hash
  list never holds pictures).

Hashes here are ``bytes`` of 32 (the PDQ reference bit order, ``bytes.hex()`` gives the
interchange hex).

Modules, one job each: :mod:`~hashwatch.robust.routes` (route classes and thresholds, view-hash
records), :mod:`~hashwatch.robust.trim` (border trimming), :mod:`~hashwatch.robust.regions`
(picture regions of screenshots and collages), :mod:`~hashwatch.robust.views` (known and query
PDQ views), :mod:`~hashwatch.robust.local` (ORB keypoints, stored form),
:mod:`~hashwatch.robust.geometry` (tentative pairs, RANSAC fit), :mod:`~hashwatch.robust.scene`
(scene check), :mod:`~hashwatch.robust.local_store` (exact keypoint store),
:mod:`~hashwatch.robust.index` (a small in-process matcher over both tiers),
:mod:`~hashwatch.robust.extras` (what hashing workers compute per file).
"""

from __future__ import annotations

from hashwatch.robust._pixels import WORK_SIDE
from hashwatch.robust.extras import known_extras, query_extras
from hashwatch.robust.geometry import fit_local, local_pairs, verify_local
from hashwatch.robust.index import RobustIndex, RobustMatch
from hashwatch.robust.local import _LOCAL_MAGIC as _LOCAL_MAGIC  # stored-form header
from hashwatch.robust.local import (
    LOCAL_KNN,
    LOCAL_MATCH_RADIUS,
    LOCAL_MAX_KEYPOINTS,
    LOCAL_MIN_COVER,
    LOCAL_MIN_INLIERS,
    LocalFeatures,
    decode_local,
    encode_local,
    known_local,
    query_local,
)
from hashwatch.robust.local_store import LocalStore
from hashwatch.robust.regions import MAX_REGIONS, REGION_SIDE, find_regions, query_regions
from hashwatch.robust.routes import (
    MIN_QUALITY,
    THRESHOLDS,
    KnownHash,
    QueryHash,
    best_distances,
    hash_match,
    known_class,
    part_of_frame,
    query_class,
    route_rank,
    route_threshold,
)
from hashwatch.robust.scene import (
    SCENE_COVERED,
    SCENE_PDQ_MAX,
    SCENE_REDETECT_MIN,
    SCENE_REFOUND_MIN,
    SceneCheck,
    scene_check,
)
from hashwatch.robust.trim import trim_box
from hashwatch.robust.verify import (
    LocalVerdict,
    candidate_pairs,
    nominee_ceiling,
    search_in_stages,
    verify,
)
from hashwatch.robust.views import (
    KNOWN_CROP_SCALES,
    KNOWN_VIEWS,
    QUERY_DEROTATIONS,
    known_signals,
    query_signals,
)

__all__ = [
    "part_of_frame",
    "LocalStore",
    "LocalVerdict",
    "SceneCheck",
    "RobustIndex",
    "RobustMatch",
    "best_distances",
    "hash_match",
    "query_regions",
    "KnownHash",
    "LocalFeatures",
    "QueryHash",
    "THRESHOLDS",
    "find_regions",
    "known_class",
    "known_local",
    "known_signals",
    "query_class",
    "query_local",
    "query_signals",
    "route_threshold",
    "route_rank",
    "trim_box",
    "scene_check",
    "fit_local",
    "verify_local",
    "nominee_ceiling",
    "search_in_stages",
    "local_pairs",
    "candidate_pairs",
    "verify",
    "encode_local",
    "decode_local",
    "known_extras",
    "query_extras",
    "MIN_QUALITY",
    "WORK_SIDE",
    "REGION_SIDE",
    "MAX_REGIONS",
    "KNOWN_CROP_SCALES",
    "KNOWN_VIEWS",
    "QUERY_DEROTATIONS",
    "LOCAL_KNN",
    "LOCAL_MATCH_RADIUS",
    "LOCAL_MAX_KEYPOINTS",
    "LOCAL_MIN_COVER",
    "LOCAL_MIN_INLIERS",
    "SCENE_COVERED",
    "SCENE_PDQ_MAX",
    "SCENE_REDETECT_MIN",
    "SCENE_REFOUND_MIN",
]
