"""The scale study at each list size: the matcher's two tiers built over the known images
plus N scale images as the product builds them, and every cached query run through the
cascade (:func:`run_sizes`); see :mod:`hashwatch.scalestudy` for what counts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from hashwatch import robust as R
from hashwatch.robust.keypoint_index import KeypointIndex, KeypointParams, last_search_stats
from hashwatch.robust.local import LocalFeatures
from hashwatch.robust.vocab import Vocabulary
from hashwatch.scalestudy.measure import _folder_bytes, _proc_rss, _rss_mib
from hashwatch.scalestudy.queries import QueryCache, StudySet
from hashwatch.scalestudy.results import SizeResult, _merge
from hashwatch.scalestudy.synthetic import SCALE_ID0, SYNTH_ID0, recombine


def _hash_rows(views_per_image: Sequence[tuple[int, Sequence]], core: bool = False
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    ids, codes, variants = [], [], []
    for image_id, views in views_per_image:
        for v in views:
            if v.variant != "full" and v.quality < R.MIN_QUALITY:
                continue
            if core and v.variant not in ("full", "trim"):
                continue
            ids.append(image_id)
            codes.append(v.code)
            variants.append(v.variant)
    return (np.array(ids, np.int64),
            np.frombuffer(b"".join(codes), np.uint8).reshape(-1, 32), variants)


_PART_FN: Callable[[tuple[list[str], int, int, int | None]], SizeResult] | None = None


def _call_part(part: tuple[list[str], int, int, int | None]) -> SizeResult:
    assert _PART_FN is not None
    return _PART_FN(part)


def run_sizes(ss: StudySet, cache: QueryCache, set_dir: Path, sizes: Sequence[int], *,
              n_real: int | None = None, index_dir: Path | None = None,
              params: KeypointParams | None = None, vocab: Vocabulary | None = None,
              top: int = 8, hash_views: str = "all",
              workers: int = 1, max_distractors: int | None = None,
              all_distractors_from: int | None = None, scene_every: int = 4,
              say: Callable[[str], None] = lambda s: None) -> Iterator[SizeResult]:
    """The cascade for every cached query against the known images + N scale images, for
    each N of ``sizes`` (ascending), one result per size as it is measured.

    The scale images are the first ``n_real`` generated ones (default: all of the smallest
    size), the rest recombined from them (:func:`recombine`; keypoint tier only: no hash-tier
    rows, no PDQ views for the scene check, which then has only its re-detection test). The
    keypoint index grows from one size to the next as the product's does (incremental adds,
    saved into ``index_dir``, default a folder beside ``set_dir``), and each size is searched
    as the product searches it: mapped from its folder (:meth:`KeypointIndex.load`), through
    :func:`hashwatch.robust.verify.search_in_stages` (plain, mirrored, small-picture pass),
    each nominee verified pairwise. The pairwise references (the query's own image alone,
    with its 128 kept keypoints and with all 200 stored) do not depend on N: computed at the
    first size and carried over. See the module docstring for what is counted.

    ``vocab``: the keypoint index's vocabulary (default: the shipped one).
    ``hash_views="core"``: the hash tier holds only the full and trimmed views.
    ``workers``: query processes forked after each build (each query on one core; times are
    the CPU time of the thread that ran it). Distractors: the first ``max_distractors``, all
    of them from size ``all_distractors_from`` on; every ``scene_every``-th one runs the scene
    check on every nominee a transform was found for (what P(scene | chance alignment) is
    measured on; its times are kept apart), the others run as the product does."""
    import shutil

    from hashwatch.index import HammingIndex
    from hashwatch.robust.vocab import default_vocabulary
    from hashwatch.scaleset import VARIANTS, duplicate_distractors, iter_shards

    sizes = sorted(int(n) for n in sizes)
    n_real = sizes[0] if n_real is None else min(n_real, sizes[0])
    dups = duplicate_distractors(ss.distractors, ss.sources) if ss.sources else []
    nk = len(ss.known)
    index_dir = Path(index_dir or Path(set_dir).parent / "kpindex-study")
    if index_dir.exists():
        shutil.rmtree(index_dir)
    core = hash_views == "core"
    # -- the real images: both tiers -----------------------------------------------------
    t0, c0 = time.perf_counter(), time.process_time()
    kp = KeypointIndex(vocab or default_vocabulary(), params)
    kp.add_many((i, f) for i, f in enumerate(ss.known_local))
    ids, codes, variants = _hash_rows(list(enumerate(ss.known_views)), core)
    row_ids, row_codes, row_var = [ids], [codes], list(variants)
    shard_pdq: list[tuple[int, np.ndarray, np.ndarray]] = []
    shards = []  # the real shards, kept for recombination
    t_kp = c_kp = 0.0
    n_done = 0
    saved_at = 0

    def add(items: Iterable[tuple[int, LocalFeatures]]) -> None:
        nonlocal t_kp, c_kp, saved_at
        tk, ck = time.perf_counter(), time.process_time()
        kp.add_many(items)
        if kp.n_slots - saved_at >= 200_000:  # records go to disk as they would in the product
            kp.save(index_dir, replace=saved_at == 0)
            saved_at = kp.n_slots
        t_kp += time.perf_counter() - tk
        c_kp += time.process_time() - ck

    for sh in iter_shards(set_dir, n_real):
        base = SCALE_ID0 + int(sh.index[0])
        add((base + j, sh.local(j)) for j in range(len(sh)))
        for j in range(len(sh)):
            i2, c2, v2 = _hash_rows([(base + j, sh.hashes(j))], core)
            row_ids.append(i2)
            row_codes.append(c2)
            row_var += v2
        shard_pdq.append((base, sh.pdq, sh.pdq_quality))
        shards.append(sh)
        n_done += len(sh)
        say(f"  built {n_done:,} (real)")
    if n_done < n_real:
        raise ValueError(f"{set_dir} holds {n_done:,} scale images, not {n_real:,}")
    th = time.perf_counter()
    hix = HammingIndex()
    all_ids = np.concatenate(row_ids)
    hix.add(np.arange(len(all_ids), dtype=np.int64), np.concatenate(row_codes), copy=False)
    row_class = np.array([R.known_class(v) for v in row_var])
    hash_build_s = time.perf_counter() - th
    starts = np.r_[0, np.cumsum([len(sh) for sh in shards])]

    def real(i: int) -> LocalFeatures:
        s = int(np.searchsorted(starts, i, side="right") - 1)
        return shards[s].local(int(i - starts[s]))

    rng = np.random.default_rng([ss.seed, 0x5CA1E])
    scale_views: dict[int, list] = {}  # only what the scene check of a nominee needs

    def views_of(image_id: int) -> list:
        if image_id < nk:
            return ss.known_views[image_id]
        if image_id not in scale_views:
            i = image_id - SCALE_ID0
            for base, pdq, qual in shard_pdq:
                if base - SCALE_ID0 <= i < base - SCALE_ID0 + len(pdq):
                    j = i - (base - SCALE_ID0)
                    scale_views[image_id] = [
                        R.KnownHash(v, pdq[j, k].tobytes(), int(qual[j, k]))
                        for k, v in enumerate(VARIANTS) if qual[j, k] >= 0]
        return scale_views.get(image_id, [])

    radius = max(R.THRESHOLDS.values())
    cur: list[SizeResult] = []
    search_ix: list[KeypointIndex] = []
    refs: dict[str, tuple[list[bool], list[bool]]] = {}

    def hash_tier(views: Sequence) -> set[int]:
        t = time.thread_time()
        qc = np.frombuffer(b"".join(v.code for v in views), np.uint8).reshape(-1, 32)
        found: set[int] = set()
        for v, hits in zip(views, hix.search_many(qc, radius), strict=True):
            qcls = R.query_class(v.variant)
            for row, dist in hits:
                kcls = str(row_class[row])
                limit = R.THRESHOLDS.get((qcls, kcls))
                if limit is None or dist > limit:
                    continue
                if (qcls, kcls) != ("full", "full") and v.quality < R.MIN_QUALITY:
                    continue
                found.add(int(all_ids[row]))
        cur[0].t_hash.append(time.thread_time() - t)
        return found

    def keypoint_tier(q: LocalFeatures, own: int | None, allowed: set[int],
                      kind: str) -> tuple[set[int], int]:
        """The product's keypoint search (stages, nomination, pairwise verification of each
        nominee); records CPU times, counts and every chance alignment."""
        r = cur[0]
        kpi = search_ix[0]
        scene_all = kind == "distractor-scene"
        t_s = t_v = 0.0
        n_c = n_st = scanned = passed = scenes = fills = 0
        rank = -1
        c_start = time.thread_time()

        def search(stage: LocalFeatures, n: int | None) -> dict[int, R.LocalVerdict]:
            nonlocal t_s, t_v, n_c, n_st, scanned, passed, scenes, rank, fills
            t = time.thread_time()
            cands = kpi.search(stage, top=n or top)
            t1 = time.thread_time()
            t_s += t1 - t
            sst = last_search_stats()
            scanned += sst.get("scanned", 0)
            passed += sst.get("passed", 0)
            fills += sst.get("filled", 0) > 0
            n_st += 1
            n_c += len(cands)
            out = {}
            for i, c in enumerate(cands):
                if c.image_id == own and rank < 0:
                    rank = i
                v = R.verify(stage, kpi.features(c.slot),
                             lambda c=c: views_of(c.image_id), scene_all=scene_all)
                scenes += v.scene is not None
                out[c.image_id] = v
                if c.image_id not in allowed:
                    sc = v.scene
                    r.chance.append((int(v.inliers), bool(v.sane), 256 if sc is None else
                                     int(sc.pdq), 0.0 if sc is None or sc.refound <
                                     R.SCENE_REFOUND_MIN else float(sc.redetect)))
                    r.chance_synthetic.append(c.image_id >= SYNTH_ID0)
                    r.chance_kind.append(kind)
            t_v += time.thread_time() - t1
            return out

        verdicts = R.search_in_stages(q, search)
        r.t_cpu.append(time.thread_time() - c_start)
        r.t_search.append(t_s)
        r.t_verify.append(t_v)
        r.scanned.append(scanned)
        r.passed.append(passed)
        r.stages.append(n_st)
        r.fills.append(fills)
        r.t_kind.append(kind)
        r.candidates_checked.append(n_c)
        r.scene_runs.append(scenes)
        return {i for i, v in verdicts.items() if v.ok}, rank

    def reference(q: LocalFeatures, known: LocalFeatures, views: list) -> bool:
        """Pairwise verification of the query's own image alone, through the same stages."""
        got = R.search_in_stages(q, lambda st, _: {0: R.verify(st, known, views)})
        return bool(got.get(0) is not None and got[0].ok)

    def run_part(part: tuple[list[str], int, int, int | None]) -> SizeResult:
        """The queries of some edits and every ``dist_step``-th of the first ``dist_max``
        distractors from ``dist_part``, into a fresh result."""
        edits, dist_part, dist_step, dist_max = part
        c_part = time.process_time()
        n_scale = cur[0].n_scale
        r = cur[0] = SizeResult(n_scale, nk, n_real)
        for en in edits:
            qs = cache.load(en)
            found, found_h, ref, ref_full, nom = [], [], [], [], []
            known_ref = refs.get(en)
            for q in qs:
                allowed = {q.known, *q.partners}
                hits = hash_tier(q.views)
                r.n_queries["edited"] = r.n_queries.get("edited", 0) + 1
                if hits:
                    ok = q.known in hits
                    found_h.append(ok)
                    found.append(ok)
                    nom.append(-2)  # found by the hash tier
                    ref.append(ok)
                    ref_full.append(ok)
                    bad = hits - allowed
                    if bad:
                        r.false_matches.append({"query": en, "known": q.known,
                                                "tier": "hash", "images": sorted(bad)})
                    continue
                found_h.append(False)
                r.n_keypoint_queries["edited"] = r.n_keypoint_queries.get("edited", 0) + 1
                assert q.local is not None, "a hash-tier miss without keypoints in the cache"
                r.t_extract.append(q.t_local)
                matched, rank = keypoint_tier(q.local, q.known, allowed, "edited")
                found.append(q.known in matched)
                nom.append(rank)
                # references: pairwise verification of the true image, whatever the
                # nomination, with the index's verification keypoints and with all stored
                if known_ref is None:
                    ref.append(reference(q.local, search_ix[0].features(int(q.known)),
                                         ss.known_views[q.known]))
                    ref_full.append(reference(q.local, ss.known_local[q.known],
                                              ss.known_views[q.known]))
                bad = matched - allowed
                if bad:
                    r.false_matches.append({"query": en, "known": q.known,
                                            "tier": "keypoint", "images": sorted(bad)})
            if known_ref is not None:
                ref, ref_full = known_ref
            r.found[en], r.found_hash[en], r.verify_ref[en] = found, found_h, ref
            r.verify_full[en] = ref_full
            r.nominated[en] = nom
            say(f"  {n_scale:,} {en}: {100 * np.mean(found):.1f}% (hash "
                f"{100 * np.mean(found_h):.1f}%, pairwise {100 * np.mean(ref):.1f}%)")
        dq = cache.load("distractors")[:dist_max] if dist_step else []
        for i in range(dist_part, len(dq), dist_step or 1):
            q = dq[i]
            r.n_queries["distractor"] = r.n_queries.get("distractor", 0) + 1
            hits = hash_tier(q.views)
            if hits:
                r.false_matches.append({"query": "distractor", "known": -1, "index": i,
                                        "tier": "hash", "images": sorted(hits)})
                continue
            r.n_keypoint_queries["distractor"] = \
                r.n_keypoint_queries.get("distractor", 0) + 1
            assert q.local is not None
            r.t_extract.append(q.t_local)
            kind = "distractor-scene" if i % scene_every == 0 else "distractor"
            matched, _ = keypoint_tier(q.local, None, set(), kind)
            if matched:
                r.false_matches.append({"query": "distractor", "known": -1, "index": i,
                                        "tier": "keypoint", "images": sorted(matched)})
        r.build["part_cpu_s"] = time.process_time() - c_part
        r.sizes.update({f"part_{k}": v for k, v in _proc_rss().items()})
        return r

    # -- each size: grow the index, save, map, query --------------------------------------
    build_prev = time.perf_counter() - t0, time.process_time() - c0
    for n_scale in sizes:
        t1, c1 = time.perf_counter(), time.process_time()
        while n_done < n_scale:
            m = min(5_000, n_scale - n_done)
            pairs = rng.integers(0, n_real, size=(m, 2))
            add((SYNTH_ID0 + n_done - n_real + j, recombine(real(a), real(b), rng))
                for j, (a, b) in enumerate(pairs))
            n_done += m
            if n_done % 50_000 < 5_000:
                say(f"  built {n_done:,}/{n_scale:,} (recombined beyond {n_real:,})")
        kp.save(index_dir, replace=saved_at == 0)
        saved_at = kp.n_slots
        res = SizeResult(n_scale, nk, n_real, dup_distractors=dups)
        res.build.update({"hash_views_core": float(core), "keypoint_add_s": t_kp,
                          "keypoint_add_cpu_s": c_kp, "hash_build_s": hash_build_s,
                          "wall_s": build_prev[0] + time.perf_counter() - t1,
                          "cpu_s": build_prev[1] + time.process_time() - c1})
        build_prev = (0.0, 0.0)
        # the index as the product holds it: mapped from its folder
        rss0 = _proc_rss()
        search_ix[:] = [KeypointIndex.load(index_dir, mmap=True, params=kp.params)]
        st = search_ix[0].stats()
        fixed = sum((index_dir / f).stat().st_size for f in ("vocab.npz", "df.npy"))
        res.sizes = {**{k: float(v) for k, v in st.items()},
                     "hash_rows": float(len(all_ids)),
                     "hash_bytes": float(hix.stats()["bytes"]),
                     "index_dir_bytes": float(_folder_bytes(index_dir)),
                     "index_fixed_bytes": float(fixed),
                     "ram_bytes": float(st["posting_bytes"] + st["offset_bytes"]
                                        + st["slot_bytes"] + kp.vocab.n_words * 8),
                     "rss_before_load_mib": rss0.get("VmRSS", math.nan),
                     "rss_after_load_mib": _proc_rss().get("VmRSS", math.nan)}
        say(f"  {n_scale:,}: {st['postings']:,} postings, {len(all_ids):,} hash rows, "
            f"{res.sizes['index_dir_bytes'] / 2**20:,.0f} MiB on disk")
        full_d = all_distractors_from is not None and n_scale >= all_distractors_from
        dmax = None if full_d else max_distractors
        parts = [(ss.edits[w::workers], w, workers, dmax) for w in range(workers)]
        t_q = time.perf_counter()
        cur[:] = [res]
        if workers == 1:
            got = [run_part(parts[0])]
        else:
            import multiprocessing

            global _PART_FN
            _PART_FN = run_part
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                got = pool.map(_call_part, parts, chunksize=1)
            _PART_FN = None
        for g in got:
            _merge(res, g)
        for en in res.found:
            refs.setdefault(en, (res.verify_ref[en], res.verify_full[en]))
        res.build["queries_wall_s"] = time.perf_counter() - t_q
        res.build["queries_cpu_s"] = sum(g.build.get("part_cpu_s", 0.0) for g in got)
        res.build["distractors_max"] = float(dmax or -1)
        res.sizes["rss_mib"] = _rss_mib()
        for k in ("VmRSS", "RssAnon", "RssFile"):
            res.sizes[f"query_{k}_mib"] = max(g.sizes.get(f"part_{k}", 0.0) for g in got)
        say(f"  {n_scale:,}: {res.n_queries}")
        search_ix.clear()
        yield res


def run_size(ss: StudySet, cache: QueryCache, set_dir: Path, n_scale: int,
             **kw: object) -> SizeResult:
    """:func:`run_sizes` at one size."""
    return next(run_sizes(ss, cache, set_dir, [n_scale], **kw))  # type: ignore[arg-type]
