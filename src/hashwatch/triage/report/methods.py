"""The methods section of a case report: which hashes, which thresholds, which routes, and
how reliable each is, as measured (figures and the commands that measured them are the ones
in BENCHMARKS.md; ``tests/test_report.py`` checks that they still agree)."""

from __future__ import annotations

from typing import Any

from hashwatch.explain import ROUTE_KINDS

__all__ = ["MEASURED", "methods"]

# Each figure is quoted from BENCHMARKS.md (section, figure text, command). When a benchmark
# is re-run, update both; the test fails if a figure here is no longer in BENCHMARKS.md.
MEASURED: list[dict[str, str]] = [
    {
        "what": "false matches among all distractor x known pairs, every route together "
                "(200 known images, 4,515 distractors: 903,000 pairs, 60 edits)",
        "figure": "0",
        "rate": "4.6e-13",
        "rate_what": "estimated false-match rate per pair (hash tier 8.4e-24 + local tier "
                     "2.0e-9 x 2.3e-4)",
        "section": "Robust matching — benchmark figures (issue 5)",
        "command": "PYTHONPATH=src .venv/bin/python benchmarks/robustness.py --known 200 "
                   "--seed 0 --out /work/helpers/lead/robust/run2",
    },
    {
        "what": "plain PDQ, whole picture, distance <= 31: false matches among the same pairs",
        "figure": "0",
        "rate": "2.9e-25",
        "rate_what": "estimated false-match rate per pair (normal lower-tail fit)",
        "section": "Robust matching — benchmark figures (issue 5)",
        "command": "PYTHONPATH=src .venv/bin/python benchmarks/robustness.py --known 200 "
                   "--seed 0 --out /work/helpers/lead/robust/run2",
    },
    {
        "what": "edited copies of known images recognised (mean recall over 60 edits)",
        "figure": "96.8%",
        "rate": "35.0%",
        "rate_what": "the same with plain PDQ alone (the interchange anchor)",
        "section": "Robust matching — benchmark figures (issue 5)",
        "command": "PYTHONPATH=src .venv/bin/python benchmarks/robustness.py --known 200 "
                   "--seed 0 --out /work/helpers/lead/robust/run2",
    },
]

HASHES = [
    ("MD5, SHA-1, SHA-256", "cryptographic hashes of the file's bytes: equal only for "
     "identical files"),
    ("PDQ", "Meta's 256-bit perceptual hash of the picture (ThreatExchange PDQ); pictures "
     "with PDQ quality below 50 are not matched perceptually"),
    ("ORB keypoints", "local features of known pictures (OpenCV ORB), checked geometrically "
     "(RANSAC) and by a scene check; used only when no hash matched"),
]


def methods(pdq_threshold: int = 31, hash_views: list[str] | None = None) -> dict[str, Any]:
    """The methods section as data (rendered by the HTML and PDF reports). ``hash_views``:
    the known images' views the PDQ index held (None: every view)."""
    try:
        from hashwatch import robust

        routes = [{"query": q, "known": k, "threshold": t}
                  for (q, k), t in sorted(robust.THRESHOLDS.items())]
        min_inliers = getattr(robust, "LOCAL_MIN_INLIERS", None)
    except (ImportError, AttributeError):
        routes, min_inliers = [], None
    return {
        "hashes": [{"name": n, "what": w} for n, w in HASHES],
        "pdq_threshold": pdq_threshold,
        "hash_views": hash_views,
        "pdq_min_quality": 50,
        "route_thresholds": routes,
        "keypoint_min_inliers": min_inliers,
        "routes": [{"route": k, "what": w} for k, w in ROUTE_KINDS.items()],
        "order": "exact hashes first; then every PDQ view within its route's threshold; "
                 "then keypoints when no hash matched",
        "measured": MEASURED,
        "measured_where": "BENCHMARKS.md in the hashwatch source tree",
    }
