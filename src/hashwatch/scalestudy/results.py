"""What one list size of the scale study measured (:class:`SizeResult`), merging the results
of the query parts run in parallel, and saving/loading a result as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class SizeResult:
    """Everything measured at one list size (see :func:`run_size`)."""

    n_scale: int
    n_known: int
    n_real: int = -1  # of the n_scale: real generated images; the rest recombined
    build: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, float] = field(default_factory=dict)
    found: dict[str, list[bool]] = field(default_factory=dict)  # edit -> per known image
    found_hash: dict[str, list[bool]] = field(default_factory=dict)
    verify_ref: dict[str, list[bool]] = field(default_factory=dict)  # pairwise, own image
    nominated: dict[str, list[int]] = field(default_factory=dict)  # rank of own (-1: not)
    false_matches: list[dict] = field(default_factory=list)
    n_queries: dict[str, int] = field(default_factory=dict)  # by kind: edited, distractor
    n_keypoint_queries: dict[str, int] = field(default_factory=dict)
    t_kind: list[str] = field(default_factory=list)  # "edited" / "distractor", per entry below
    t_search: list[float] = field(default_factory=list)  # keypoint tier: nomination, s
    t_verify: list[float] = field(default_factory=list)  # keypoint tier: verification, s
    t_hash: list[float] = field(default_factory=list)  # hash tier search, s
    t_extract: list[float] = field(default_factory=list)  # query keypoints, CPU s
    scanned: list[int] = field(default_factory=list)
    passed: list[int] = field(default_factory=list)
    candidates_checked: list[int] = field(default_factory=list)
    scene_runs: list[int] = field(default_factory=list)
    # every verified candidate that is not the query's own picture (nor a collage partner):
    # (inliers, geometry sane, aligned PDQ (256: scene check not run), re-detected share)
    chance: list[tuple[int, bool, int, float]] = field(default_factory=list)
    chance_synthetic: list[bool] = field(default_factory=list)  # per chance entry
    chance_kind: list[str] = field(default_factory=list)  # per chance entry: query kind
    # distractors whose photograph is also a source (scaleset.duplicate_distractors)
    dup_distractors: list[int] = field(default_factory=list)
    t_cpu: list[float] = field(default_factory=list)  # keypoint tier, CPU s (thread), per query
    stages: list[int] = field(default_factory=list)  # search stages run, per query
    # searches per query whose vote within ht left free places that the looser radius filled
    # (KeypointIndex.search; expected ~never among 10^5+ known sets)
    fills: list[int] = field(default_factory=list)
    verify_full: dict[str, list[bool]] = field(default_factory=dict)  # pairwise, 200 stored


def _merge(into: SizeResult, part: SizeResult) -> None:
    """Fold one query part's counts and measurements into ``into``."""
    for name in ("found", "found_hash", "verify_ref", "verify_full", "nominated"):
        getattr(into, name).update(getattr(part, name))
    for name in ("n_queries", "n_keypoint_queries"):
        d = getattr(into, name)
        for k, v in getattr(part, name).items():
            d[k] = d.get(k, 0) + v
    for name in ("false_matches", "t_kind", "t_search", "t_verify", "t_hash", "t_extract",
                 "scanned", "passed", "candidates_checked", "scene_runs", "chance",
                 "chance_synthetic", "chance_kind", "t_cpu", "stages", "fills"):
        getattr(into, name).extend(getattr(part, name))


def save_result(res: SizeResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(res)))


def load_result(path: Path) -> SizeResult:
    return SizeResult(**json.loads(path.read_text()))
