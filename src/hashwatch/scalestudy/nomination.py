"""The index-only nomination study at 2*10^7 known sets: the known images among real scale
images and synthetic sets (:func:`hashwatch.scalestudy.synthetic.add_synthetic`); whether
the keypoint index nominates each verifiable query's own picture, and what that costs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from hashwatch import robust as R
from hashwatch.robust.keypoint_index import KeypointIndex, KeypointParams, last_search_stats
from hashwatch.scalestudy.measure import _rss_mib
from hashwatch.scalestudy.queries import QueryCache, StudySet
from hashwatch.scalestudy.synthetic import SCALE_ID0, add_synthetic


def nominate(ss: StudySet, cache: QueryCache, set_dir: Path, n_real: int, n_total: int, *,
             params: KeypointParams | None = None, top: int = 8,
             say: Callable[[str], None] = lambda s: None) -> dict:
    """Nomination with the known images among ``n_real`` real scale images and synthetic
    sets up to ``n_total`` (:func:`add_synthetic`): for each keypoint-tier query whose own
    picture the pairwise reference verifies, whether the index nominates it among ``top``;
    search time and postings scanned per query; index memory."""
    from hashwatch.robust.vocab import default_vocabulary
    from hashwatch.scaleset import iter_shards

    t0, c0 = time.perf_counter(), time.process_time()
    kp = KeypointIndex(default_vocabulary(), params)
    for sh in iter_shards(set_dir, n_real):
        base = SCALE_ID0 + int(sh.index[0])
        kp.add_many((base + j, sh.local(j)) for j in range(len(sh)))
        say(f"  real {int(sh.index[-1]) + 1:,}/{n_real:,}")
    # synthetic sets are drawn from the scale images' postings only, then the known images
    add_synthetic(kp, n_total - len(ss.known) - n_real, say=say)
    kp.add_many((i, f) for i, f in enumerate(ss.known_local))
    build = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    st = kp.stats()
    out: dict = {"n_real": n_real, "n_total": kp.n_slots, "build": build,
                 "sizes": {**st, "rss_mib": _rss_mib()}, "edits": {}, "t_search": [],
                 "scanned": [], "passed": [], "distractor_t_search": []}
    for en in ss.edits:
        ranks = []
        for q in cache.load(en):
            if q.hash_own or q.local is None:
                continue
            ref = R.verify(q.local, ss.known_local[q.known], ss.known_views[q.known])
            t = time.perf_counter()
            cands = kp.search(q.local, top=top)
            out["t_search"].append(time.perf_counter() - t)
            s = last_search_stats()
            out["scanned"].append(s.get("scanned", 0))
            out["passed"].append(s.get("passed", 0))
            r = next((i for i, c in enumerate(cands) if c.image_id == q.known), -1)
            ranks.append((r, bool(ref.ok)))
        out["edits"][en] = ranks
        say(f"  {en}: nominated {sum(r >= 0 for r, ok in ranks if ok)}/"
            f"{sum(ok for _, ok in ranks)} verifiable")
    for q in cache.load("distractors"):
        if q.local is None:
            continue
        t = time.perf_counter()
        kp.search(q.local, top=top)
        out["distractor_t_search"].append(time.perf_counter() - t)
    out["sizes"]["rss_mib"] = _rss_mib()
    return out
