"""Cost of a query that reaches the keypoint tier, on a saved scale-study index: nomination,
verification and the small-picture pass, per query, with recall and false matches checked
against the study's own run at that size.

The quick path of the scale study (`benchmarks/scale_study.py`): it re-runs only the queries
that reached the keypoint tier in a `scale_study.py run` (its `size-N.json` says which: the
hash tier does not depend on N), against the index that run saved, as the product searches it
(`hashwatch.robust.search_in_stages`: plain, mirrored, small-picture pass; each stage nominates
8 known images, each verified pairwise). One core, one process per `--part`.

    # the first N keypoint sets of a saved index (how the index was at that size; the
    # verification file is shared, not copied)
    .venv/bin/python benchmarks/keypoint_cost.py cut --src IDX --slots 1000159 --out IDX1M
    # the queries, timed (CPU time of the thread: decode and keypoint extraction of the query
    # excluded, the small-picture pass's extraction reported apart)
    .venv/bin/python benchmarks/keypoint_cost.py replay --index IDX1M --queries Q \\
        --result OUT/size-1000000.json --set SET --real 75000 --distractors 600 --out R.json
    .venv/bin/python benchmarks/keypoint_cost.py report R.json [BEFORE.json]

Other settings of the keypoint tier (query side only, the saved index is unchanged):
``--top`` nominees verified per stage (the matcher's KEYPOINT_CANDIDATES), ``--m`` words per
query descriptor, ``--probe`` coarse cells probed, ``--ht`` signature radius in bits. With
``--ranks K`` the replay measures nomination, not time: the rank of the query's own image (and
its collage partners) among the K best nominees of each stage is recorded and those are
verified; every stage is searched unless the own image verified within the first ``--min-top``
nominees of an earlier one (that stage then decides for every larger ``top``). ``recall`` then
gives, for each ``top`` from ``--min-top`` to K, the queries found exactly as the staged search
would find them (a stage stops the later ones when one of its first ``top`` nominees verifies;
no wrong image verified in the study's runs) and the mean recall of the 60-edit suite with the
study's hash-tier results:

    .venv/bin/python benchmarks/keypoint_cost.py replay ... --ranks 32 --m 4 --out RANKS.json
    .venv/bin/python benchmarks/keypoint_cost.py recall RANKS.json --study OUT/size-1000000.json \\
        --tops 8,12,16,24,32

Run it against another checkout's code (the "before" of a change) with
`PYTHONPATH=/that/checkout/src` (and its compiled extensions copied into it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")


def query_side_options(p: argparse.ArgumentParser) -> None:
    """--m / --m-few / --few / --probe / --ht / --max-df-share: the keypoint index's
    query-side parameters (``keypoint_index.QUERY_SIDE``) for one run, instead of today's
    defaults."""
    p.add_argument("--m", type=int, default=None, help="words per query descriptor")
    p.add_argument("--m-few", type=int, default=None,
                   help="words per descriptor in a search of at most --few descriptors")
    p.add_argument("--few", type=int, default=None,
                   help="a search of at most this many descriptors takes --m-few words")
    p.add_argument("--probe", type=int, default=None, help="coarse cells probed")
    p.add_argument("--ht", type=int, default=None, help="signature radius (bits)")
    p.add_argument("--max-df-share", type=float, default=None,
                   help="stop words: lists longer than this share of the sets carry no vote")


def apply_query_side(ix, a: argparse.Namespace) -> None:
    """Set the options of :func:`query_side_options` on a loaded index (the saved postings do
    not depend on them)."""
    import dataclasses

    over = {k: v for k, v in (("m", a.m), ("m_few", a.m_few), ("few", a.few),
                              ("coarse_probe", a.probe), ("ht", a.ht),
                              ("max_df_share", a.max_df_share)) if v is not None}
    ix.params = dataclasses.replace(ix.params, **over)


def cmd_cut(a: argparse.Namespace) -> int:
    """A saved index cut to its first --slots keypoint sets (postings of later sets dropped,
    document frequencies recounted, verification file linked)."""
    import numpy as np

    src, out, n = a.src, a.out, a.slots
    man = json.loads((src / "manifest.json").read_text())
    if n > man["slots"]:
        raise SystemExit(f"{src} holds {man['slots']:,} sets, not {n:,}")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    words, sigs, ids = [], [], []
    for name in man["segments"]:
        off = np.load(src / f"{name}.offsets.npy")
        s = np.load(src / f"{name}.sigs.npy")
        i = np.load(src / f"{name}.ids.npy")
        w = np.repeat(np.arange(len(off) - 1), np.diff(off).astype(np.int64))
        keep = i < n
        words.append(w[keep])
        sigs.append(s[keep])
        ids.append(i[keep])
    w, s, i = (np.concatenate(x) for x in (words, sigs, ids))
    n_words = len(off) - 1
    order = np.lexsort((i, w))
    counts = np.bincount(w, minlength=n_words)
    offs = np.zeros(n_words + 1, np.uint64)
    np.cumsum(counts, out=offs[1:])
    name = f"seg-{0:010d}-{n:010d}"
    np.save(out / f"{name}.offsets.npy", offs)
    np.save(out / f"{name}.sigs.npy", np.ascontiguousarray(s[order], np.uint16))
    np.save(out / f"{name}.ids.npy", np.ascontiguousarray(i[order], np.uint32))
    np.save(out / "df.npy", counts.astype(np.int64))
    np.save(out / "slots.npy", np.load(src / "slots.npy")[:n])
    np.save(out / "dead.npy", np.load(src / "dead.npy")[:n])
    voff = np.load(src / "verify.off.npy")[: n + 1]
    np.save(out / "verify.off.npy", voff)
    for f in ("verify.bin", "vocab.npz"):
        if not (out / f).exists():
            os.symlink((src / f).resolve(), out / f)
    man.update({"generation": 1, "segments": [name], "slots": n, "verify_bytes": int(voff[-1])})
    (out / "manifest.json").write_text(json.dumps(man))
    for f in out.iterdir():
        if not f.is_symlink():
            f.chmod(0o600)
    print(f"{out}: {n:,} sets, {len(i):,} postings", file=sys.stderr)
    return 0


def cmd_resign(a: argparse.Namespace) -> int:
    """A saved index's postings made again with another vocabulary of the same centres (e.g.
    v2's per-word signature bits, issue 10), from its verification records: each set's
    indexed keypoints are the spread subset of its record's (as ``add_many`` takes them from
    the set it keeps), assigned and signed with --vocab. Needs records of format 1 (whole
    descriptors: the signature bits may lie anywhere in them); the records, slots and
    tombstones are linked or copied, the postings, df and vocabulary written anew."""
    import numpy as np

    from hashwatch.robust.keypoint_index import KeypointIndex, subset
    from hashwatch.robust.vocab import Vocabulary

    t0, c0 = time.perf_counter(), time.process_time()
    src, out = a.index, a.out
    ix = KeypointIndex.load(src, mmap=True)
    if ix.record_format != 1:
        raise SystemExit(f"{src}: records of format {ix.record_format} keep cut descriptors; "
                         "re-signing needs format 1")
    voc = Vocabulary.load(a.vocab)
    if not (np.array_equal(voc.coarse, ix.vocab.coarse) and
            np.array_equal(voc.fine, ix.vocab.fine)):
        raise SystemExit("--vocab has other centres than the index's vocabulary")
    n, p = ix.n_slots, ix.params
    words, sigs, ids = [], [], []
    batch, owner = [], []
    for slot in range(n + 1):
        if slot < n:
            d = subset(ix.features(slot), p.n_index).desc
            batch.append(d)
            owner.append(np.full(len(d), slot, np.uint32))
        if batch and (len(batch) == 20_000 or slot == n):
            d = np.concatenate(batch)
            w = voc.assign(d, 1)[0][:, 0]
            words.append(w)
            sigs.append(voc.signatures(d, w))
            ids.append(np.concatenate(owner))
            batch, owner = [], []
            print(f"  {slot:,} / {n:,} sets, {time.perf_counter() - t0:.0f} s", file=sys.stderr,
                  flush=True)
    w, s, i = (np.concatenate(x) for x in (words, sigs, ids))
    del words, sigs, ids
    order = np.argsort(w, kind="stable")  # slot order within each list, as the index keeps it
    counts = np.bincount(w, minlength=voc.n_words)
    offs = np.zeros(voc.n_words + 1, np.uint64)
    np.cumsum(counts, out=offs[1:])
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = f"seg-{0:010d}-{n:010d}"
    np.save(out / f"{name}.offsets.npy", offs)
    np.save(out / f"{name}.sigs.npy", np.ascontiguousarray(s[order], np.uint16))
    np.save(out / f"{name}.ids.npy", np.ascontiguousarray(i[order], np.uint32))
    np.save(out / "df.npy", counts.astype(np.int64))
    for f in ("slots.npy", "dead.npy", "verify.off.npy"):
        np.save(out / f, np.load(src / f))
    if not (out / "verify.bin").exists():
        os.symlink((src / "verify.bin").resolve(), out / "verify.bin")
    voc.save(out / "vocab.npz")
    man = json.loads((src / "manifest.json").read_text())
    man.update({"generation": 1, "segments": [name], "vocab": voc.digest(),
                "signature_scheme": voc.sig_scheme})
    (out / "manifest.json").write_text(json.dumps(man))
    for f in out.iterdir():
        if not f.is_symlink():
            f.chmod(0o600)
    same = ""
    if len(ix._segments) == 1:  # how far the records' subsets re-make the source's postings
        seg = ix._segments[0]
        old_key = np.sort(np.repeat(np.arange(ix.vocab.n_words, dtype=np.int64), seg.df())
                          * (n + 1) + np.asarray(seg.ids))
        new_key = w.astype(np.int64) * (n + 1) + i
        at = np.minimum(np.searchsorted(old_key, new_key), len(old_key) - 1)
        same = (f"; postings whose (word, set) the source index lacks: "
                f"{int((old_key[at] != new_key).sum()):,}")
    print(f"{out}: {n:,} sets, {len(i):,} postings, scheme {voc.sig_scheme}{same}; "
          f"{time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU",
          file=sys.stderr)
    return 0


def _known_views(corpus: Path | None, n_known: int = 200, seed: int = 0) -> list[list]:
    """The study's known images' stored PDQ views (what the scene check of a known nominee
    reads), computed as `lists add` stores them."""
    from hashwatch import evaluate as E
    from hashwatch.robust import known_signals
    from hashwatch.scaleset import study_split

    known, _, _ = study_split(E.corpus_files(E.resolve_corpus(corpus)), n_known, seed)
    return [known_signals(E.load_pixels(p)) for p in known]


def _scale_views(set_dir: Path, n_real: int):
    """image id -> stored PDQ views of a real scale image (what the scene check reads)."""
    from hashwatch.robust import KnownHash
    from hashwatch.scaleset import VARIANTS, iter_shards
    from hashwatch.scalestudy import SCALE_ID0

    tables = []
    for sh in iter_shards(set_dir, n_real):
        tables.append((SCALE_ID0 + int(sh.index[0]), sh.pdq, sh.pdq_quality))

    def views(image_id: int) -> list:
        for base, pdq, qual in tables:
            j = image_id - base
            if 0 <= j < len(pdq):
                return [KnownHash(v, pdq[j, k].tobytes(), int(qual[j, k]))
                        for k, v in enumerate(VARIANTS) if qual[j, k] >= 0]
        return []
    return views
def _study_views(corpus: Path | None, set_dir: Path, n_real: int, n_known: int = 200,
                 seed: int = 0):
    """image id -> stored PDQ views of any image of the study (its known images first, then
    the real scale images): what the scene check of a nominee reads."""
    known = _known_views(corpus, n_known, seed)
    scale = _scale_views(set_dir, n_real)

    def views_of(image_id: int) -> list:
        return known[image_id] if image_id < len(known) else scale(image_id)

    return views_of




def cmd_replay(a: argparse.Namespace) -> int:
    import cv2

    from hashwatch import robust as R
    from hashwatch.robust import keypoint_index as KI
    from hashwatch.robust.keypoint_index import KeypointIndex
    from hashwatch.scalestudy import QueryCache

    cv2.setNumThreads(1)
    res = json.loads(a.result.read_text())
    cache = QueryCache(a.queries)
    views_of = _study_views(a.corpus, a.set, a.real)

    ix = KeypointIndex.load(a.index, mmap=True)
    apply_query_side(ix, a)
    top = a.top
    rows = []
    small_t = [0.0]
    # the small-picture pass's keypoint extraction is timed apart (the package's `verify`
    # name is the function, so the module comes from sys.modules)
    V = sys.modules["hashwatch.robust.verify"]
    real_small = V.small_pass

    def timed_small(q):
        t = time.thread_time()
        out = real_small(q)
        small_t[0] += time.thread_time() - t
        return out

    V.small_pass = timed_small

    def ranks(q, own: int | None, allowed: set[int]) -> dict:
        """Every stage searched; per stage [[rank, image id, verified?], ...] of the query's
        own image and partners among the --ranks best nominees."""
        stages, t_nom = [], [0.0]

        def search(stage, _top=None):
            t = time.thread_time()
            cands = ix.search(stage, top=a.ranks)
            t_nom[0] += time.thread_time() - t
            hit, out = [], {}
            for r, c in enumerate(cands):
                if c.image_id in allowed:
                    v = R.verify(stage, ix.features(c.slot), lambda c=c: views_of(c.image_id))
                    hit.append([r, c.image_id, bool(v.ok)])
                    if c.image_id == own and v.ok and r < a.min_top:
                        out = {own: v}  # this stage decides for every top >= --min-top
            stages.append(hit)
            return out  # else nothing matched: the next stage runs

        R.search_in_stages(q, search)
        # nomination CPU of the stages searched (all of them unless an early one decided)
        return {"own": own, "stages": stages, "cpu": 0.0, "nominate": t_nom[0], "small": 0.0,
                "verify": 0.0, "verified": 0, "found": False, "false": [], "scanned": 0}

    def one(q, own: int | None, allowed: set[int]) -> dict:
        t_nom = [0.0]
        n_ver = [0]
        small_t[0] = 0.0

        def search(stage, n=None):
            t = time.thread_time()
            cands = ix.search(stage, top=n or top)
            t_nom[0] += time.thread_time() - t
            n_ver[0] += len(cands)
            return {c.image_id: R.verify(stage, ix.features(c.slot),
                                         lambda c=c: views_of(c.image_id))
                    for c in cands}

        if hasattr(R, "verify_candidates"):
            def search(stage, n=None):  # noqa: F811 - the product's own loop when it has one
                t = time.thread_time()
                cands = ix.search(stage, top=n or top)
                t_nom[0] += time.thread_time() - t
                n_ver[0] += len(cands)
                return R.verify_candidates(stage, cands, ix.features,
                                           lambda c: views_of(c.image_id))

        if a.ranks:
            return ranks(q, own, allowed)
        c0 = time.thread_time()
        got = R.search_in_stages(q, search)
        cpu = time.thread_time() - c0
        ok = {i for i, v in got.items() if v.ok}
        return {"cpu": cpu, "nominate": t_nom[0], "small": small_t[0],
                "verify": cpu - t_nom[0] - small_t[0], "verified": n_ver[0],
                "found": own is not None and own in ok, "false": sorted(ok - allowed),
                "scanned": KI.last_search_stats().get("scanned", 0)}

    edits = sorted(res["found_hash"])
    if a.edits:
        edits = [e for e in edits if e in a.edits.split(",")]
    todo = []
    for en in edits:
        if any(x != -2 for x in res["nominated"][en]):
            todo.append(en)
    todo = todo[a.part::a.parts]
    t0 = time.perf_counter()
    for en in todo:
        nom, found = res["nominated"][en], res["found"][en]
        qs = cache.load(en)
        for i, q in enumerate(qs):
            # -2: the hash tier matched something (its own image or a collage partner), so
            # the query never reached the keypoint tier
            if nom[i] == -2 or (a.every > 1 and i % a.every):
                continue
            r = one(q.local, q.known, {q.known, *q.partners})
            r.update({"edit": en, "i": i, "before": bool(found[i])})
            rows.append(r)
        print(f"[{time.perf_counter() - t0:6.0f}s] {en}: {len(rows)} queries", file=sys.stderr,
              flush=True)
    if a.distractors and not a.ranks:
        dq = cache.load("distractors")[: a.distractors]
        for i in range(a.part, len(dq), a.parts):
            q = dq[i]
            if q.local is None:
                continue
            r = one(q.local, None, set())
            r.update({"edit": "distractor", "i": i, "before": False})
            rows.append(r)
        print(f"[{time.perf_counter() - t0:6.0f}s] distractors done", file=sys.stderr)
    out = {"index": str(a.index), "slots": ix.n_slots, "rows": rows,
           "load": os.getloadavg(), "wall_s": time.perf_counter() - t0,
           "cpu_s": time.process_time(), "code": a.label, "top": top, "ranks": a.ranks,
           "min_top": a.min_top,
           "params": {k: getattr(ix.params, k)
                      for k in ("m", "coarse_probe", "ht", "max_df_share")}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out))
    print(f"wrote {a.out}: {len(rows)} queries", file=sys.stderr)
    return 0


def _summary(paths: list[Path], study: Path | None = None) -> dict:
    import numpy as np

    rows, slots = [], None
    for p in paths:
        d = json.loads(p.read_text())
        rows += d["rows"]
        slots = d["slots"]
    if study is not None:  # only the queries that reached the keypoint tier in that run
        nom = json.loads(study.read_text())["nominated"]
        rows = [r for r in rows if r["edit"] == "distractor" or nom[r["edit"]][r["i"]] != -2]
    ed = [r for r in rows if r["edit"] != "distractor"]
    di = [r for r in rows if r["edit"] == "distractor"]

    def pc(v, p):
        return float(np.percentile(v, p)) * 1000 if v else float("nan")

    cpu = [r["cpu"] for r in ed]
    nocut = [r["cpu"] - r["small"] for r in ed]
    return {
        "slots": slots, "edited": len(ed), "distractors": len(di),
        "found": sum(r["found"] for r in ed), "found_before_run": sum(r["before"] for r in ed),
        "false": sum(bool(r["false"]) for r in rows),
        "false_edited": sum(bool(r["false"]) for r in ed),
        "cpu_p50": pc(cpu, 50), "cpu_p99": pc(cpu, 99),
        "nosmall_p50": pc(nocut, 50), "nosmall_p99": pc(nocut, 99),
        "nom_p50": pc([r["nominate"] for r in ed], 50),
        "nom_p99": pc([r["nominate"] for r in ed], 99),
        "ver_p50": pc([r["verify"] for r in ed], 50),
        "ver_p99": pc([r["verify"] for r in ed], 99),
        "small_p50": pc([r["small"] for r in ed], 50),
        "small_p99": pc([r["small"] for r in ed], 99),
        "verified_mean": float(np.mean([r["verified"] for r in ed])) if ed else float("nan"),
        "dist_p50": pc([r["cpu"] for r in di], 50), "dist_p99": pc([r["cpu"] for r in di], 99),
        "dist_nosmall_p50": pc([r["cpu"] - r["small"] for r in di], 50),
        "dist_nosmall_p99": pc([r["cpu"] - r["small"] for r in di], 99),
    }


def cmd_report(a: argparse.Namespace) -> int:
    """One line per result group (comma-separated files are one group, e.g. parts)."""
    print("| run | sets | edited queries (keypoint tier) | found (study run) | false "
          "matches | CPU p50 / p99 ms | without small-picture pass p50 / p99 | nomination "
          "p50 / p99 | verification p50 / p99 | small-picture pass p50 / p99 | nominees "
          "verified (mean) | distractors: n, CPU p50 / p99 (without small pass) |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for g in a.results:
        s = _summary([Path(p) for p in g.split(",")], a.study)
        print(f"| {Path(g.split(',')[0]).stem} | {s['slots']:,} | {s['edited']:,} | "
              f"{s['found']:,} ({s['found_before_run']:,}) | {s['false']} | "
              f"{s['cpu_p50']:.1f} / {s['cpu_p99']:.1f} | {s['nosmall_p50']:.1f} / "
              f"{s['nosmall_p99']:.1f} | {s['nom_p50']:.1f} / {s['nom_p99']:.1f} | "
              f"{s['ver_p50']:.1f} / {s['ver_p99']:.1f} | {s['small_p50']:.1f} / "
              f"{s['small_p99']:.1f} | {s['verified_mean']:.1f} | {s['distractors']}, "
              f"{s['dist_p50']:.0f} / {s['dist_p99']:.0f} ({s['dist_nosmall_p50']:.0f} / "
              f"{s['dist_nosmall_p99']:.0f}) |")
    return 0


def staged_found(stages: list, own: int | None, policy: str) -> bool:
    """Whether the staged search finds ``own`` under ``policy``: ``"T"``, the first ``T``
    nominees of each stage verified; ``"F+G"``, the first ``F``, and ``G`` more of the same
    stage when none of those verified; ``"F>T"``, the stages with ``F`` each, then, when no
    stage matched, the stages again with ``T`` each. The first round that verifies a nominee
    decides (its verified images are the result)."""
    passes = [[int(c)] for c in policy.split(">")] if ">" in policy else [_cuts(policy)]
    for cuts in passes:
        ok = _first_ok(stages, cuts)
        if ok:
            return own in ok
    return False


def _cuts(policy: str) -> list[int]:
    out, c = [], 0
    for x in policy.split("+"):
        c += int(x)
        out.append(c)
    return out


def _first_ok(stages: list, cuts: list[int]) -> set[int]:
    """The verified images of the first (stage, round) with any."""
    for hit in stages:
        for c in cuts:
            ok = {i for r, i, v in hit if r < c and v}
            if ok:
                return ok
    return set()


def _policy_span(policy: str) -> tuple[int, int]:
    """(smallest first round, most nominees looked at) of a policy."""
    if ">" in policy:
        c = [int(x) for x in policy.split(">")]
        return c[0], max(c)
    c = _cuts(policy)
    return c[0], c[-1]


def cmd_recall(a: argparse.Namespace) -> int:
    """Found queries and mean recall of the 60-edit suite per ``top`` from a --ranks replay."""
    res = json.loads(a.study.read_text())
    runs = [json.loads(Path(p).read_text()) for g in a.results for p in g.split(",")]
    lo, hi = max(d["min_top"] for d in runs), min(d["ranks"] for d in runs)
    rows = [r for d in runs for r in d["rows"] if r["edit"] != "distractor"]
    found, nom, ref = res["found"], res["nominated"], res["verify_ref"]
    n_q = sum(len(v) for v in found.values())
    hash_found = sum(f and n == -2 for e in found for f, n in zip(found[e], nom[e], strict=True))
    study_kp = sum(f and n != -2 for e in found for f, n in zip(found[e], nom[e], strict=True))
    verifiable = sum(bool(ref[r["edit"]][r["i"]]) for r in rows)
    print(f"{len(rows):,} keypoint-tier queries ({verifiable:,} verifiable pairwise), "
          f"{hash_found:,} of {n_q:,} found by the hash tier; the study's run found "
          f"{study_kp:,} in the keypoint tier: {100 * (hash_found + study_kp) / n_q:.2f}%")
    print("| nominees per stage | keypoint-tier found | own image nominated in some stage "
          "(of verifiable) | mean recall, 60 edits |")
    print("|---:|---:|---:|---:|")
    for pol in a.tops.split(","):
        first, top = _policy_span(pol)
        if first < lo or top > hi:
            raise SystemExit(f"{pol}: outside what the runs recorded ({lo}-{hi})")
        f = sum(staged_found(r["stages"], r["own"], pol) for r in rows)
        nm = sum(bool(ref[r["edit"]][r["i"]]) and any(
            rr < top and i == r["own"] for h in r["stages"] for rr, i, _ in h) for r in rows)
        print(f"| {pol} | {f:,} | {nm:,} ({100 * nm / max(1, verifiable):.1f}%) | "
              f"{100 * (hash_found + f) / n_q:.2f}% |")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cut", help="the first --slots sets of a saved index")
    c.add_argument("--src", type=Path, required=True)
    c.add_argument("--slots", type=int, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.set_defaults(fn=cmd_cut)
    rs = sub.add_parser("resign", help="postings of a saved index made with another vocabulary")
    rs.add_argument("--index", type=Path, required=True)
    rs.add_argument("--vocab", type=Path, required=True)
    rs.add_argument("--out", type=Path, required=True)
    rs.set_defaults(fn=cmd_resign)
    r = sub.add_parser("replay", help="the keypoint-tier queries of a study run, timed")
    r.add_argument("--index", type=Path, required=True)
    r.add_argument("--queries", type=Path, required=True)
    r.add_argument("--result", type=Path, required=True, help="the run's size-N.json")
    r.add_argument("--set", type=Path, required=True)
    r.add_argument("--real", type=int, default=75_000)
    r.add_argument("--corpus", type=Path, default=None)
    r.add_argument("--edits", default=None)
    r.add_argument("--every", type=int, default=1, help="every n-th query of each edit")
    r.add_argument("--distractors", type=int, default=0)
    r.add_argument("--part", type=int, default=0)
    r.add_argument("--parts", type=int, default=1)
    r.add_argument("--label", default="")
    r.add_argument("--top", type=int, default=8, help="nominees verified per stage")
    query_side_options(r)
    r.add_argument("--ranks", type=int, default=0,
                   help="record the own image's rank among this many nominees per stage "
                        "(no timing, every stage searched; see `recall`)")
    r.add_argument("--min-top", type=int, default=8,
                   help="with --ranks: later stages are skipped once the own image verifies "
                        "at a rank below this (they cannot change the result for top >= it)")
    r.add_argument("--out", type=Path, required=True)
    r.set_defaults(fn=cmd_replay)
    rc = sub.add_parser("recall", help="found queries per nominee count from --ranks replays")
    rc.add_argument("results", nargs="+")
    rc.add_argument("--study", type=Path, required=True, help="the run's size-N.json")
    rc.add_argument("--tops", default="8,12,16,24,32,8+8,8>16",
                    help="comma-separated policies (see staged_found): T, F+G, F>T")
    rc.set_defaults(fn=cmd_recall)
    p = sub.add_parser("report", help="markdown table of replay results")
    p.add_argument("results", nargs="+")
    p.add_argument("--study", type=Path, default=None,
                   help="the run's size-N.json: count only the queries that reached the "
                        "keypoint tier there (replays made before that filter existed)")
    p.set_defaults(fn=cmd_report)
    a = ap.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    raise SystemExit(main())
