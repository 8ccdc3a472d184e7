"""Where the keypoint tier's nomination time goes, and what query-side levers cost in recall,
on a saved scale-study index (issue 10's query-time target at 2*10^7).

Two steps. ``record`` runs the product's keypoint search (``search_in_stages``: plain, mirrored
and small-picture stages, each stage nominating and verifying as the matcher does) for every
query of the given edits that reaches the keypoint tier (``scale_study.py queries`` cache), and
saves, per search, the stage's descriptors, its nominee count and the nominees with their
verdicts. ``profile`` then replays only the nomination of those searches against an index (the
same or another size), timing each part on the thread's CPU clock, and counts:

- word assignment (``Vocabulary.assign``), signatures, idf weights, the posting scan (C), the
  pick of the best voted slots (``collect``, C);
- query descriptors, probed lists, postings scanned, postings within the signature radius,
  slots voted for; the share of the scanned postings that sit in the longest 1% / 5% of the
  vocabulary's lists;
- a recall proxy for a lever: queries whose own image was nominated *and verified* in the
  recorded searches and that the lever no longer nominates in those searches (LOST), and
  queries the recorded run did not find whose own image the lever newly nominates (not
  verified here: a real recall run, ``scale_recall.py run --m/--probe/--ht/--max-df-share``,
  settles both).

    .venv/bin/python benchmarks/nomination_cost.py record --index IDX1M --queries Q \\
        --set SET --out REC [--edits ...] [--distractors 300]
    .venv/bin/python benchmarks/nomination_cost.py profile --index IDX1M --record REC \\
        --out P.json [--m 2] [--probe 1] [--ht 2] [--max-df-share 0.002] [--segments 9]
    .venv/bin/python benchmarks/nomination_cost.py report P.json [P2.json ...] [--verify REC2]

``compare REC REC2`` checks that two records of the same queries (before and after a change of
the verification code) agree on every search, nominee, verdict (passed, inliers, geometry,
scene check, transform, frame share; recorded since the verdicts were saved) and match, and
gives each one's verification CPU per query; ``report --verify REC2`` takes each search's
verification time from another ``record`` run over the same queries (e.g. with cheaper
verification code; the nominees must be the same, searches that differ are left out and
counted), so the whole query at a size ``profile`` ran at is that nomination + this
verification; ``report --max-searches N`` replays a per-query budget of N stage searches (the
first N of each query; LOST then also counts the own images verified only after them).

``tile`` builds a nomination-only index of ``times`` x the sets of a saved index, for measuring
nomination at 2*10^7 directly instead of extrapolating (issue 10: "measure nomination at 20M
directly where you can"): copy 0 is the source index itself (so the recorded queries' own
images are there), and every further copy is a recombination of the source's real postings
into new sets: in copy r, set j holds the even-word postings of source set p_r(j) and the
odd-word postings of source set p_r(j) + k_r (a random permutation and shift per copy). The
word of every posting, its signature and the list lengths are the source's, times ``times``;
no verification records (``features`` is not available, the fill of a small list never runs
at this size):

    .venv/bin/python benchmarks/nomination_cost.py tile --index IDX1M --times 20 --out IDX20M

One core, one process; times are ``time.thread_time_ns`` (CPU of the thread).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from collections import defaultdict
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402


def _verdict_key(v) -> tuple:
    """What a verdict decides (``compare`` checks two records agree on it): passed, inliers,
    geometry sane, scene check run and passed, and for a match its transform's description
    and frame share."""
    fit = None if v.fit is None else (v.fit.model, v.fit.mirrored, v.fit.rotation,
                                      v.fit.scale, v.fit.stretch)
    return (bool(v.ok), int(v.inliers), bool(v.sane),
            None if v.scene is None else bool(v.scene.ok), fit, v.frame_share)


def cmd_compare(a: argparse.Namespace) -> int:
    """Two records of the same queries (e.g. before and after a change of the verification
    code): the same searches, nominees, per-nominee verdicts (``_verdict_key``) and matched
    images, query by query; the verification CPU of each."""
    recs = [_load_record(r) for r in (a.before, a.after)]
    keys = sorted(set(recs[0]) | set(recs[1]))
    n_q = n_calls = n_nom = 0
    differ: dict[str, int] = defaultdict(int)
    for key in keys:
        b, c = recs[0].get(key), recs[1].get(key)
        if b is None or c is None:
            differ["query in one record only"] += 1
            continue
        n_q += 1
        differ["matched"] += b["matched"] != c["matched"]
        if len(b["calls"]) != len(c["calls"]):
            differ["searches"] += 1
            continue
        for x, y in zip(b["calls"], c["calls"], strict=True):
            n_calls += 1
            n_nom += len(x["cands"])
            differ["nominees"] += x["cands"] != y["cands"]
            differ["passed"] += x["ok"] != y["ok"]
            if "verdicts" in x and "verdicts" in y:
                differ["verdicts"] += x["verdicts"] != y["verdicts"]
            else:
                differ["verdicts not recorded"] += 1
    print(f"{n_q} queries ({len(keys)} in either record), {n_calls} searches, {n_nom} nominees")
    for k in ("query in one record only", "matched", "searches", "nominees", "passed",
              "verdicts", "verdicts not recorded"):
        print(f"  differing {k}: {differ[k]}")
    for label, rec in zip(("before", "after"), recs, strict=True):
        tv = [sum(c["t_verify"] for c in r["calls"]) for (e, _), r in rec.items()
              if e != "distractors"]
        print(f"  {label}: verification CPU per keypoint-tier query p50 / p99 / mean "
              f"{_pc(tv, 50):.1f} / {_pc(tv, 99):.1f} / {np.mean(tv):.1f} ms "
              f"({len(tv)} queries)")
    return int(any(differ.values()))


def _load_record(record: Path) -> dict[tuple[str, int], dict]:
    out = {}
    for f in sorted(record.glob("*.pkl")):
        with open(f, "rb") as fh:
            doc = pickle.load(fh)
        for r in doc["queries"]:
            out[(doc["edit"], r["qi"])] = r
    return out


def cmd_record(a: argparse.Namespace) -> int:
    import cv2

    import hashwatch.robust as R
    from hashwatch.edits import edit_names
    from hashwatch.matcher import KEYPOINT_CANDIDATES
    from hashwatch.robust.keypoint_index import KeypointIndex
    from hashwatch.scalestudy import QueryCache

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from keypoint_cost import _study_views

    cv2.setNumThreads(1)
    cache = QueryCache(a.queries)
    edits = a.edits.split(",") if a.edits else edit_names()[:60]
    views_of = _study_views(a.corpus, a.set, a.real)

    ix = KeypointIndex.load(a.index, mmap=True)
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for name in edits + (["distractors"] if a.distractors else []):
        path = a.out / (name.replace(":", "_").replace("/", "_") + ".pkl")
        if path.exists() or not cache.has(name):
            continue
        qs = cache.load(name)
        dis = name == "distractors"
        if dis:
            qs = qs[: a.distractors]
        recs = []
        for qi, q in enumerate(qs):
            if q.local is None:
                continue
            calls: list[dict] = []

            def search(stage, top, calls=calls):
                t0 = time.thread_time_ns()
                cands = ix.search(stage, top=top or KEYPOINT_CANDIDATES)
                t1 = time.thread_time_ns()
                res = {c.image_id: R.verify(stage, ix.features(c.slot),
                                            lambda c=c: views_of(c.image_id)) for c in cands}
                t2 = time.thread_time_ns()
                # CPU ms of the thread: the verification of the nominees (reading their
                # records included) is flat in N; the nomination is replayed by `profile`
                calls.append({"desc": np.ascontiguousarray(stage.desc),
                              "top": top or KEYPOINT_CANDIDATES,
                              "cands": [c.image_id for c in cands],
                              "ok": [bool(res[c.image_id].ok) for c in cands],
                              "verdicts": [_verdict_key(res[c.image_id]) for c in cands],
                              "t_nominate": (t1 - t0) / 1e6, "t_verify": (t2 - t1) / 1e6})
                return res

            got = R.search_in_stages(q.local, search)
            recs.append({"qi": qi, "known": None if dis else q.known,
                         "matched": sorted(i for i, v in got.items() if v.ok), "calls": calls})
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump({"edit": name, "slots": ix.n_slots, "queries": recs}, fh)
        os.replace(tmp, path)
        print(f"[{time.perf_counter() - t0:6.0f}s] {name}: {len(recs)} keypoint-tier queries",
              file=sys.stderr, flush=True)
    return 0


def cmd_profile(a: argparse.Namespace) -> int:
    import dataclasses

    from hashwatch.robust import kpcore
    from hashwatch.robust.keypoint_index import KeypointIndex, _scratch

    kpcore.require()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from keypoint_cost import apply_query_side

    ix = KeypointIndex.load(a.index, mmap=True)
    apply_query_side(ix, a)
    p = ix.params
    segs = _split(ix._segments_now(), a.segments) if a.segments > 0 else ix._segments_now()
    df_all = np.sort(ix._df)[::-1]
    thr1, thr5 = int(df_all[len(df_all) // 100]), int(df_all[len(df_all) // 20])
    n = max(1, ix.n_slots)
    clock = time.thread_time_ns
    rows = []
    for f in sorted(a.record.glob("*.pkl")):
        with open(f, "rb") as fh:
            doc = pickle.load(fh)
        for r in doc["queries"]:
            for c in r["calls"]:
                d = c["desc"]
                t0 = clock()
                words, _ = ix.vocab.assign(d, ix.words_per_descriptor(len(d)),
                                           coarse_probe=p.coarse_probe)
                t1 = clock()
                sigs = np.ascontiguousarray(
                    ix.vocab.signatures(d) if ix.vocab.sig_scheme == "global"
                    else ix.vocab.signatures(d, words)).ravel()
                t2 = clock()
                wt = ix.word_weights(words)
                t3 = clock()
                sc = _scratch(n)
                stamp = sc.next_stamp(len(d))
                qw = np.ascontiguousarray(words, np.int64).ravel()
                qwt = np.ascontiguousarray(wt, np.float32).ravel()
                while True:
                    nt = scanned = passed = 0
                    for s in segs:
                        nt, k_sc, k_pa = kpcore.scan(s.offsets, s.sigs, s.ids, qw, sigs, qwt,
                                                     p.ht, stamp, sc.acc, sc.votes,
                                                     sc.touched, nt, words.shape[1])
                        scanned += k_sc
                        passed += k_pa
                    if nt <= len(sc.touched):
                        break
                    # as the product does (KeypointIndex._best_images): grow, scan again
                    sc.grow_touched(max(2 * len(sc.touched), nt + nt // 4))
                    stamp = sc.next_stamp(len(d))
                t4 = clock()
                k = 4 * c["top"]
                best, bv = np.empty(k, np.int64), np.empty(k, np.float32)
                got = kpcore.collect(sc.votes, sc.touched, nt, ix._dead.view, k, best, bv)
                out: list[int] = []
                for s in best[:got].tolist():
                    im = int(ix._slots.view[s])
                    if im not in out:
                        out.append(im)
                    if len(out) == c["top"]:
                        break
                t5 = clock()
                used = ix._df[words][wt > 0]
                rows.append({
                    "edit": doc["edit"], "qi": r["qi"], "known": r["known"], "nq": len(d),
                    "probes": int((wt > 0).sum()), "scanned": int(scanned),
                    "passed": int(passed), "touched": int(nt),
                    "long1": int(used[used >= thr1].sum()), "long5": int(used[used >= thr5].sum()),
                    "assign": (t1 - t0) / 1e6, "sig": (t2 - t1) / 1e6, "idf": (t3 - t2) / 1e6,
                    "scan": (t4 - t3) / 1e6, "collect": (t5 - t4) / 1e6,
                    "cands": out, "rec_cands": c["cands"], "rec_ok": c["ok"],
                    "rec_verify": c.get("t_verify")})
    res = {"index": str(a.index), "slots": n, "params": dataclasses.asdict(p),
           "segments": len(segs),
           "long1_df": thr1, "long5_df": thr5, "load": os.getloadavg(),
           "cpu_s": time.process_time(), "rows": rows}
    a.out.write_text(json.dumps(res))
    print(f"wrote {a.out}: {len(rows)} searches", file=sys.stderr)
    return 0


def _split(segs: list, k: int) -> list:
    """The postings of ``segs`` as ``k`` segments by slot range: the first holds half the
    slots, the next a quarter, ..., the last two the same (an index grown by 50,000-slot seals
    and tiered merges holds 1-9 segments of falling sizes at 2*10^7)."""
    from hashwatch.robust.kpsegment import _Segment

    whole = _Segment.merge(segs) if len(segs) > 1 else segs[0]
    n_words = len(whole.offsets) - 1
    words = np.repeat(np.arange(n_words), whole.df())
    lo, hi = whole.slot_lo, whole.slot_hi
    bounds, left = [lo], hi - lo
    for _ in range(k - 1):
        left //= 2
        bounds.append(hi - left)
    bounds = sorted(set(bounds)) + [hi]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        m = (whole.ids >= a) & (whole.ids < b)
        out.append(_Segment.build(n_words, words[m], whole.sigs[m], whole.ids[m], a, b))
    return out


def cmd_tile(a: argparse.Namespace) -> int:
    import shutil

    from hashwatch.robust.keypoint_index import KeypointIndex, _Segment

    src = KeypointIndex.load(a.index, mmap=True)
    segs = src._segments_now()
    base = segs[0] if len(segs) == 1 else _Segment.merge(segs)
    n, r_times = src.n_slots, a.times
    nw = len(base.offsets) - 1
    off = np.asarray(base.offsets, np.int64)
    ln = np.diff(off)
    total = int(off[-1]) * r_times
    a.out.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = f"seg-{0:010d}-{n * r_times:010d}"
    t0 = time.perf_counter()

    def out_array(part: str, dtype: type, shape: int) -> np.ndarray:
        path = a.out / f"{name}.{part}.npy"
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(shape,))
        os.chmod(path, 0o600)
        return arr

    out_off = out_array("offsets", np.uint64, nw + 1)
    out_off[:] = (off * r_times).astype(np.uint64)
    out_sig = out_array("sigs", np.uint16, total)
    out_ids = out_array("ids", np.uint32, total)
    word_of = np.repeat(np.arange(nw, dtype=np.int64), ln)
    odd = (word_of & 1).astype(bool)
    lenw = ln[word_of]
    dest0 = off[word_of] * (r_times - 1) + np.arange(len(word_of), dtype=np.int64)
    del word_of
    sigs = np.asarray(base.sigs)
    ids = np.asarray(base.ids, np.int64)
    rng = np.random.default_rng(a.seed)
    slots = np.empty(n * r_times, np.int64)
    dead = np.empty(n * r_times, np.bool_)
    src_slots, src_dead = src._slots.view, src._dead.view
    for r in range(r_times):
        dest = dest0 + r * lenw
        out_sig[dest] = sigs
        if r == 0:
            out_ids[dest] = ids
            slots[:n], dead[:n] = src_slots, src_dead
        else:
            # set j of copy r: even-word postings of source set perm^-1(j), odd-word ones of
            # the set `shift` further on (recombined real postings, no two copies alike)
            perm = rng.permutation(n)
            shift = int(rng.integers(1, n))
            s = np.where(odd, (ids + shift) % n, ids)
            out_ids[dest] = (r * n + perm[s]).astype(np.uint32)
            slots[r * n:(r + 1) * n] = 2 * 10**10 + r * n + np.arange(n)
            dead[r * n:(r + 1) * n] = False
        print(f"[{time.perf_counter() - t0:6.0f}s] copy {r + 1} of {r_times}",
              file=sys.stderr, flush=True)
    for arr in (out_off, out_sig, out_ids):
        arr.flush()
    del out_off, out_sig, out_ids
    for part, arr in (("slots", slots), ("dead", dead), ("df", src._df * r_times),
                      ("verify.off", np.zeros(n * r_times + 1, np.uint64))):
        path = a.out / f"{part}.npy"
        np.save(path, arr, allow_pickle=False)
        os.chmod(path, 0o600)
    shutil.copyfile(a.index / "vocab.npz", a.out / "vocab.npz")
    os.chmod(a.out / "vocab.npz", 0o600)
    man = json.loads((a.index / "manifest.json").read_text())
    man.update({"segments": [name], "slots": n * r_times, "verify_bytes": 0,
                "meta": {"tiled_from": str(a.index), "times": r_times, "seed": a.seed,
                         "source_slots": n}})
    path = a.out / "manifest.json"
    path.write_text(json.dumps(man))
    os.chmod(path, 0o600)
    print(f"wrote {a.out}: {n * r_times:,} sets, {total:,} postings, "
          f"{time.perf_counter() - t0:.0f} s wall, {time.process_time():.0f} s CPU",
          file=sys.stderr)
    return 0


def _pc(v: list[float], q: float) -> float:
    return float(np.percentile(v, q)) if len(v) else float("nan")


def _verify_times(record: Path) -> dict[tuple[str, int], list[tuple[list[int], float]]]:
    """(edit, query) -> [(nominees, verification CPU ms)] of each recorded search, in order."""
    return {k: [(c["cands"], c["t_verify"]) for c in r["calls"]]
            for k, r in _load_record(record).items()}


def _with_verification(rows: list[dict], record: Path) -> tuple[list[dict], int]:
    """``rows`` with each search's recorded verification time taken from ``record`` (another
    run of ``record`` over the same queries, e.g. with other verification code), matched by
    (edit, query, search in order); a query whose searches or nominees differ there keeps no
    verification time (left out of the whole-query figures) and is counted."""
    times = _verify_times(record)
    per_q: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        per_q[(r["edit"], r["qi"])].append(r)
    out, differ = [], 0
    for key, v in per_q.items():
        got = times.get(key)
        same = got is not None and len(got) == len(v) and all(
            c == x["rec_cands"] for (c, _), x in zip(got, v, strict=True))
        differ += not same
        ts = [t for _, t in got] if same else [None] * len(v)
        out.extend({**x, "rec_verify": t} for x, t in zip(v, ts, strict=True))
    return out, differ


def cmd_report(a: argparse.Namespace) -> int:
    print("| index sets | m / probe / ht / stop share | searches per query | nomination CPU p50 / "
          "p99 ms (per query) | assign p50 | scan p50 / p99 | collect p50 | postings scanned "
          "per search (mean) | within radius | slots voted | ns per scanned posting | "
          "scanned in longest 1% / 5% of lists | LOST / newly nominated | whole query p50 / p99 ms "
          "(+ recorded verification) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for path in a.results:
        d = json.loads(Path(path).read_text())
        rows = [r for r in d["rows"] if r["edit"] != "distractors"]
        if a.verify is not None:
            rows, differ = _with_verification(rows, a.verify)
            if differ:
                print(f"{path}: {differ} queries' searches differ in {a.verify}: their "
                      "verification left out", file=sys.stderr)
        per_q: dict[tuple, list] = defaultdict(list)
        for r in rows:
            per_q[(r["edit"], r["qi"])].append(r)
        every = dict(per_q)
        if a.max_searches:
            # a per-query budget replayed: only each query's first searches run (its stages
            # are searched in order, so the first ones are the same with or without it)
            per_q = defaultdict(list, {k: v[:a.max_searches] for k, v in per_q.items()})
            rows = [r for v in per_q.values() for r in v]

        def tot(key: str, per_q: dict = per_q) -> list[float]:
            return [sum(x[key] for x in v) for v in per_q.values()]

        parts = ("assign", "sig", "idf", "scan", "collect")
        nom = [sum(sum(x[k] for k in parts) for x in v) for v in per_q.values()]
        # the whole keypoint-tier query: this nomination + the recorded verification of the
        # nominees (flat in N; recorded at the size the searches were recorded at)
        whole = [n_ + sum(x["rec_verify"] for x in v)
                 for n_, v in zip(nom, per_q.values(), strict=True)
                 if all(x.get("rec_verify") is not None for x in v)]
        sc = np.array([r["scanned"] for r in rows], float)
        lost = gained = 0
        for key, v in per_q.items():
            own = v[0]["known"]
            # own image verified in any recorded search (all of them, also past a budget)
            rec = any(own in x["rec_cands"] and x["rec_ok"][x["rec_cands"].index(own)]
                      for x in every[key])
            kept = any(own in x["cands"] and own in x["rec_cands"]
                       and x["rec_ok"][x["rec_cands"].index(own)] for x in v)
            lost += rec and not kept
            gained += (not rec) and any(own in x["cands"] and own not in x["rec_cands"]
                                        for x in v)
        p = d["params"]
        ns = 1e6 * sum(tot("scan")) / max(1.0, sc.sum())
        m = f"{p['m_few']} (<= {p['few']}), {p['m']}" if "few" in p else f"{p['m']}"
        print(f"| {d['slots']:,} | {m} / {p['coarse_probe']} / {p['ht']} / "
              f"{p['max_df_share']} | {len(rows) / max(1, len(per_q)):.2f} | "
              f"{_pc(nom, 50):.2f} / {_pc(nom, 99):.1f} | {_pc(tot('assign'), 50):.2f} | "
              f"{_pc(tot('scan'), 50):.2f} / {_pc(tot('scan'), 99):.1f} | "
              f"{_pc(tot('collect'), 50):.2f} | {sc.mean():,.0f} | "
              f"{np.mean([r['passed'] for r in rows]):,.0f} | "
              f"{np.mean([r['touched'] for r in rows]):,.0f} | {ns:.1f} | "
              f"{sum(r['long1'] for r in rows) / max(1.0, sc.sum()):.2f} / "
              f"{sum(r['long5'] for r in rows) / max(1.0, sc.sum()):.2f} | {lost} / {gained} | "
              f"{_pc(whole, 50):.1f} / {_pc(whole, 99):.1f} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from keypoint_cost import query_side_options

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="the keypoint-tier searches of the edits, with verdicts")
    r.add_argument("--index", type=Path, required=True)
    r.add_argument("--queries", type=Path, required=True)
    r.add_argument("--set", type=Path, required=True)
    r.add_argument("--real", type=int, default=75_000)
    r.add_argument("--corpus", type=Path, default=None)
    r.add_argument("--edits", default=None, help="comma-separated (default: the 60 single)")
    r.add_argument("--distractors", type=int, default=300)
    r.add_argument("--out", type=Path, required=True)
    r.set_defaults(fn=cmd_record)
    p = sub.add_parser("profile", help="replay the recorded nominations, timed and counted")
    p.add_argument("--index", type=Path, required=True)
    p.add_argument("--record", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--segments", type=int, default=0,
                   help="split the index into this many segments by slot range first (sizes "
                        "halving, as the tiered merges leave them), to time the per-segment cost")
    query_side_options(p)
    p.set_defaults(fn=cmd_profile)
    t = sub.add_parser("tile", help="a nomination-only index of TIMES x a saved index's sets")
    t.add_argument("--index", type=Path, required=True)
    t.add_argument("--times", type=int, required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", type=Path, required=True)
    t.set_defaults(fn=cmd_tile)
    cp = sub.add_parser("compare", help="two records: same searches, nominees, verdicts")
    cp.add_argument("before", type=Path)
    cp.add_argument("after", type=Path)
    cp.set_defaults(fn=cmd_compare)
    rp = sub.add_parser("report", help="markdown table of profiles")
    rp.add_argument("results", nargs="+")
    rp.add_argument("--max-searches", type=int, default=0,
                    help="replay a budget: each query's first N searches only (LOST then "
                         "also counts own images verified only in the searches cut)")
    rp.add_argument("--verify", type=Path, default=None,
                    help="a record (REC) whose verification times replace those the "
                         "profiles carry (same queries and nominees, other verification code)")
    rp.set_defaults(fn=cmd_report)
    a = ap.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    raise SystemExit(main())
