"""How a file matched, in fields a program can use and in words a lawyer can read.

A :class:`hashwatch.matcher.Match` names its route as the matcher found it: an exact
crypto signal, the plain full-picture PDQ comparison (route ``""``), a robust PDQ view pair
``"<query view>/<known view>"`` (views from :mod:`hashwatch.robust`: ``full:rot90``,
``trim:fliph``, ``region0``, ``derot+3``; known ``full``, ``trim``, ``crop80``), or local
features (``local/orb``, with the number of geometrically verified keypoint matches, and
after a colon the transform they fit: ``local/orb:affine+mirrored``).
:func:`explain` turns that into a route *kind*, the measure that decided it (a Hamming
distance out of 256 bits, or inliers: never a placeholder such as ``-1``), and a sentence.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["ROUTE_KINDS", "explain"]

# route kind -> short description (the report's methods section lists them)
ROUTE_KINDS: dict[str, str] = {
    "exact": "identical file: a cryptographic hash (MD5, SHA-1 or SHA-256) is on the list",
    "pdq_full": "PDQ perceptual hash of the whole picture within the threshold",
    "pdq_view": "PDQ of a flipped, turned, border-trimmed, de-rotated or cropped view",
    "pdq_region": "PDQ of a picture found inside a screenshot, collage or grid, or pasted "
                  "onto another picture",
    "keypoints": "local features (ORB keypoints) that agree geometrically, then a check "
                 "that it is the same picture and not another photograph of the scene",
    "vpdq": "vPDQ: enough of the video's sampled frames (one a second) are near frames of a "
            "known video (the reference's frame-match percentages)",
}

_TURNS = {"rot90": "turned 90°", "rot180": "turned 180°", "rot270": "turned 270°",
          "flipv": "flipped top to bottom", "fliph": "flipped left to right",
          "rot90flipv": "turned 90° and flipped top to bottom",
          "rot90fliph": "turned 90° and flipped left to right"}
_CRYPTO = {"md5": "MD5", "sha1": "SHA-1", "sha256": "SHA-256"}


def _query_words(view: str) -> tuple[str, str]:
    """(kind, words) for a query view name."""
    base, _, turn = view.partition(":")
    turn_words = _TURNS.get(turn, turn)
    if base.startswith("region"):
        n = base[len("region"):]
        words = "a picture found inside the file (a screenshot or collage" + (
            f", region {int(n) + 1}" if n.isdigit() else "") + ")"
        return "pdq_region", words + (f", {turn_words}" if turn else "")
    if base.startswith("cell"):
        n = base[len("cell"):]
        return "pdq_region", "one picture of a grid of pictures in the file" + (
            f" (cell {int(n) + 1})" if n.isdigit() else "") + (f", {turn_words}" if turn else "")
    if base.startswith("rect"):
        return "pdq_region", "a picture pasted onto another picture in the file" + (
            f", {turn_words}" if turn else "")
    if base.startswith("derot"):
        m = re.match(r"derot([+-]?\d+(?:\.\d+)?)", base)
        deg = m.group(1) if m else "?"
        return "pdq_view", f"the picture turned back by {deg}°"
    if base == "trim":
        return "pdq_view", "the picture with its borders trimmed" + (
            f", {turn_words}" if turn else "")
    if base in ("full", ""):
        if turn:
            return "pdq_view", f"the picture {turn_words}"
        return "pdq_full", "the whole picture"
    return "pdq_view", f"view {view}"


def _known_words(view: str) -> str:
    if view in ("", "full"):
        return "the known picture"
    if view == "trim":
        return "the known picture with its borders trimmed"
    m = re.match(r"crop(\d+)$", view)
    if m:
        return f"a centred {m.group(1)}% crop of the known picture"
    return f"the known picture's view {view}"


_MODEL_WORDS = {
    "similarity": "cropped, scaled or turned",
    "affine": "stretched or sheared",
    # a homography is also what a stretched copy gets when its fit picks up small perspective
    # terms and passes only as a homography (its minimum is lower than the affine map's)
    "homography": "stretched or in perspective, as a photo of a screen would",
}


def _transform_words(route: str) -> str:
    """Words for a keypoint route's transform suffix (``local/orb:affine+mirrored``, see
    :func:`hashwatch.matcher.keypoint_route`); empty for a plain ``local/orb``."""
    _, _, tag = route.partition(":")
    model, _, flag = tag.partition("+")
    words = _MODEL_WORDS.get(model)
    if words is None:
        return ""
    return f"; the file shows it {'mirrored, ' if flag == 'mirrored' else ''}{words};"


def _route_threshold(qview: str, kview: str) -> int | None:
    try:
        from hashwatch import robust

        return robust.route_threshold(qview, kview or "full")
    except (ValueError, AttributeError, ImportError):
        return None


def explain(match: dict[str, Any], *, threshold: int = 31,
            list_version: int | None = None) -> dict[str, Any]:
    """Fields and words for one match (``Match.as_dict()`` shape: list, ref, signal,
    distance, exact, route, inliers; ``frame_time`` for video frames).

    Returns ``{"route": kind, "route_detail": str, "distance": int | None, "inliers": int |
    None, "ref": str, "list": str, "list_version": int | None, "how": sentence}``.
    ``distance`` is None for keypoint matches, which are measured in ``inliers``.
    """
    signal = str(match.get("signal") or "")
    route = str(match.get("route") or "")
    dist = match.get("distance")
    inliers = match.get("inliers")
    ref = str(match.get("ref") or "")
    lst = str(match.get("list") or "")
    where = f"entry {ref!r} of list {lst}" if ref else f"an entry of list {lst}"
    if list_version is not None:
        where += f" (version {list_version})"
    frame = match.get("frame_time")
    if frame is None and isinstance(match.get("frame"), dict):  # Match.as_dict() of a frame
        frame = match["frame"].get("t")
    frame_words = f"frame at {frame:g} s: " if isinstance(frame, (int, float)) else ""
    out: dict[str, Any] = {"route": "", "route_detail": route, "distance": None,
                           "inliers": None, "ref": ref, "list": lst,
                           "list_version": list_version}
    if match.get("exact") or signal in _CRYPTO:
        out["route"] = "exact"
        out["distance"] = 0
        out["how"] = (f"{frame_words}identical file: its {_CRYPTO.get(signal, signal.upper())} "
                      f"is {where}")
        return out
    if route.startswith("local") or (isinstance(dist, int) and dist < 0):
        out["route"] = "keypoints"
        out["inliers"] = inliers
        n = f"{inliers} " if inliers is not None else ""
        out["how"] = (f"{frame_words}local features: {n}keypoints of the file agree "
                      f"geometrically with {where}{_transform_words(route) or ','} and the "
                      "scene check found the same picture (not another photograph of the scene)")
        return out
    if signal == "vpdq":
        out["route"] = "vpdq"
        out["distance"] = dist
        qp, cp = match.get("query_match_percent"), match.get("compared_match_percent")
        views = (" (some frames through their turned or border-trimmed views)"
                 if route == "vpdq:views" else "")
        out["how"] = (f"vPDQ: {qp:g}% of the video's frames are near frames of {where}, "
                      f"{cp:g}% of its frames were found{views}; best frame {dist} of 256 bits"
                      if isinstance(qp, (int, float)) and isinstance(cp, (int, float))
                      else f"vPDQ: the video's frames are near frames of {where}{views}")
        return out
    out["distance"] = dist
    measure = (f"{dist} of 256 bits differ (threshold {threshold})"
               if isinstance(dist, int) else "within the threshold")
    if not route:
        out["route"] = "pdq_full"
        out["how"] = f"{frame_words}PDQ of the whole picture is near {where}: {measure}"
        return out
    qview, _, kview = route.partition("/")
    kind, qwords = _query_words(qview)
    limit = _route_threshold(qview, kview)
    if limit is not None and isinstance(dist, int):
        measure = f"{dist} of 256 bits differ (threshold {limit})"
    out["route"] = kind
    out["how"] = (f"{frame_words}PDQ of {qwords} is near {_known_words(kview)}, {where}: "
                  f"{measure}")
    return out
