"""What the keypoint tier's verification record may drop: keypoints kept (n) against the
descriptor bytes kept (ORB's first tests, Rublee et al. 2011's learned order), for issue 10's
4 KB per known image on disk.

    # pairwise reference: every query the hash tier's full and trimmed views miss, verified
    # against its own known image only (the matcher's stages: plain, mirrored, small-picture;
    # pairs, geometry, scene check), once per record variant NxB (N keypoints, B bytes);
    # resumable, one line per edit in OUT
    .venv/bin/python benchmarks/verify_record.py pairwise --queries Q --out OUT.jsonl \\
        --variants 128x32,200x32,136x24,160x20,175x18,194x16,200x15
    # chance side: distractor queries against the known images the index over the 200 known
    # images nominates (8 per stage), each nominee verified with each variant's record
    .venv/bin/python benchmarks/verify_record.py chance --queries Q --out CHANCE.json \\
        --variants 128x32,194x16
    .venv/bin/python benchmarks/verify_record.py report OUT.jsonl [--chance CHANCE.json]
    # which match radius on the kept tests keeps 48 of 256's rates: Hamming distances of true
    # correspondences (edited copies, placed by the geometric fit) and of chance pairs
    # (distractors' nearest stored descriptor), on all 256 tests and on the first 8 B
    .venv/bin/python benchmarks/verify_record.py rates --bytes 24,25 --out RATES.json

A variant's bytes per known image on disk: the record (:func:`verify_record_bytes`), its
8-byte offset and the 64 postings of 6 bytes the index keeps on disk beside it.
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

import numpy as np  # noqa: E402

DISK_EXTRA = 8 + 64 * 6  # record offset + postings kept on disk, per known image


def _variants(spec: str) -> list[tuple[str, int, int]]:
    """"NxB" (N keypoints, B descriptor bytes) or "NxBrR" (and match radius R on the kept
    tests instead of LOCAL_MATCH_RADIUS scaled to them: see :func:`_use_radius`)."""
    out = []
    for v in spec.split(","):
        n, b = v.lower().split("x")
        out.append((v, int(n), int(b.split("r")[0])))
    return out


def _use_radius(name: str) -> None:
    """Set the match radius the verification uses for variant ``name`` ("...rR": R on the kept
    tests; otherwise LOCAL_MATCH_RADIUS scaled by the product's rule)."""
    import importlib

    from hashwatch.robust import kpcore

    V = importlib.import_module("hashwatch.robust.verify")
    if "r" in name.lower():
        r = int(name.lower().split("r")[1])

        def kept(desc, radius, stored, r=r):  # the verification's radius only, unscaled
            qd, scaled = kpcore.kept_tests(desc, radius, stored)
            return qd, r if int(stored.extra.get("desc_bytes", 32)) < 32 else scaled

        V.kept_tests = kept
    else:
        V.kept_tests = kpcore.kept_tests


def disk_bytes(n: int, nbytes: int) -> int:
    from hashwatch.robust.kprecord import verify_record_bytes

    return verify_record_bytes(n, nbytes) + DISK_EXTRA


def _known(corpus: Path | None, n_known: int, seed: int) -> tuple[list, list]:
    """(stored keypoint sets as `lists add` keeps them: 200 each; stored PDQ views)."""
    from hashwatch import evaluate as E
    from hashwatch import robust as R
    from hashwatch.scaleset import study_split

    known, _, _ = study_split(E.corpus_files(E.resolve_corpus(corpus)), n_known, seed)
    pix = [E.load_pixels(p) for p in known]
    return [R.known_local(p) for p in pix], [R.known_signals(p) for p in pix]


def _records(local: list, variants: list[tuple[str, int, int]]) -> dict[str, list]:
    """Each variant's verification record of each known image, through the real codec."""
    from hashwatch.robust.keypoint_index import decode_verify, encode_verify, subset

    return {name: [decode_verify(encode_verify(subset(f, n), b)) for f in local]
            for name, n, b in variants}


def _memo_small_pass() -> None:
    """The small-picture pass of a query is the same for every variant: compute it once."""
    import importlib

    V = importlib.import_module("hashwatch.robust.verify")

    orig = V.small_pass
    memo: dict[int, object] = {}

    def cached(q):  # type: ignore[no-untyped-def]
        if id(q) not in memo:
            memo.clear()
            memo[id(q)] = orig(q)
        return memo[id(q)]

    V.small_pass = cached


def cmd_pairwise(a: argparse.Namespace) -> int:
    import cv2

    from hashwatch import robust as R
    from hashwatch.edits import edit_names
    from hashwatch.scalestudy import QueryCache

    cv2.setNumThreads(1)
    _memo_small_pass()
    variants = _variants(a.variants)
    cache = QueryCache(a.queries)
    edits = [e for e in (a.edits.split(",") if a.edits else edit_names()[:60]) if e]
    done: set[tuple[str, str]] = set()
    if a.out.exists():
        for line in a.out.read_text().splitlines():
            d = json.loads(line)
            done |= {(d["edit"], v) for v in d["verified"]}
    local, views = _known(a.corpus, a.known, a.seed)
    recs = _records(local, variants)
    t0, c0 = time.perf_counter(), time.process_time()
    with a.out.open("a") as fh:
        for e in edits:
            todo = [v for v in variants if (e, v[0]) not in done]
            if not todo:
                continue
            qs = cache.load(e)
            row: dict = {"edit": e, "n": len(qs), "hash_all": [q.hash_own for q in qs],
                         "hash_core": [q.local is None for q in qs], "verified": {},
                         "cpu_s": {}}
            for name, _n, _b in todo:
                _use_radius(name)
                got = []
                c1 = time.process_time()
                for q in qs:
                    if q.local is None:
                        got.append(None)
                        continue
                    k = recs[name][q.known]

                    def search(stage, top, q=q, k=k):  # type: ignore[no-untyped-def]
                        return {q.known: R.verify(stage, k, views[q.known])}

                    out = R.search_in_stages(q.local, search)
                    got.append(bool(out[q.known].ok) if q.known in out else False)
                row["verified"][name] = got
                row["cpu_s"][name] = time.process_time() - c1
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            print(e, {v: sum(bool(x) for x in row["verified"][v]) for v in row["verified"]},
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    print(f"{time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU",
          file=sys.stderr)
    return 0


def cmd_chance(a: argparse.Namespace) -> int:
    """Distractors (no copy among the known images) against their nominees: pairs whose
    geometry passes (sane, >= LOCAL_MIN_INLIERS: a chance alignment, which only the scene check
    then stops), verdicts ok (false matches), and the inlier tail of every pair. Nominees: from
    an index over the 200 known images holding each variant's records, or, with ``--index``
    (one or more saved study indexes, e.g. :func:`cmd_rewrite`'s copies), from each of those
    as the matcher searches it (8 per stage), each nominee verified with that index's record."""
    import cv2

    from hashwatch import robust as R
    from hashwatch.matcher import KEYPOINT_CANDIDATES
    from hashwatch.robust.keypoint_index import KeypointIndex
    from hashwatch.robust.vocab import default_vocabulary
    from hashwatch.scalestudy import QueryCache

    cv2.setNumThreads(1)
    _memo_small_pass()
    cache = QueryCache(a.queries)
    local, views = _known(a.corpus, a.known, a.seed)
    # a distractor whose photograph is also a scale-set source matches its scale image as a
    # true copy (scaleset.duplicate_distractors): left out, as the study counts them apart
    dups: set[int] = set()
    if a.index:
        from hashwatch import evaluate as E
        from hashwatch.scaleset import duplicate_distractors, study_split

        _k, dist, sources = study_split(E.corpus_files(E.resolve_corpus(a.corpus)), a.known,
                                        a.seed)
        dups = set(duplicate_distractors(dist, sources))
    qs = [q for i, q in enumerate(cache.load("distractors"))
          if q.local is not None and i not in dups][: a.max]
    setups = []  # (name, n, desc bytes, index, features of a candidate, views of an image)
    if a.index:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from keypoint_cost import _scale_views

        scale_views = _scale_views(a.set, a.real)
        for folder in a.index:
            ix = KeypointIndex.load(folder, mmap=True)
            p = ix.params
            setups.append((f"{p.n_verify}x{p.desc_bytes}{a.radius_suffix}", p.n_verify,
                           p.desc_bytes, ix,
                           lambda c, ix=ix: ix.features(c.slot),
                           lambda i: views[i] if i < len(views) else scale_views(i)))
    else:
        variants = _variants(a.variants)
        recs = _records(local, variants)
        ix = KeypointIndex(default_vocabulary())
        ix.add_many(enumerate(local))
        for name, n, b in variants:
            setups.append((name, n, b, ix, lambda c, name=name: recs[name][c.image_id],
                           lambda i: views[i]))
    res: dict = {"distractors": len(qs), "left_out_true_copies": len(dups),
                 "known": max(s[3].n_slots for s in setups), "variants": {}}
    t0 = time.perf_counter()
    for name, n, b, ix, feats, views_of in setups:
        _use_radius(name)
        inl: list[int] = []
        pair_rows: list[tuple[int, int, int, bool, bool]] = []  # query, image, inliers, geo, ok
        geo = ok = pairs = 0
        per_query_geo = 0
        c1 = time.process_time()
        for qi, q in enumerate(qs):
            hit = False

            def search(stage, top, ix=ix, feats=feats, views_of=views_of, inl=inl, qi=qi,
                       pair_rows=pair_rows):  # type: ignore[no-untyped-def]
                nonlocal geo, ok, pairs, hit
                out = {}
                for c in ix.search(stage, top=top or KEYPOINT_CANDIDATES):
                    v = R.verify(stage, feats(c), lambda c=c: views_of(c.image_id))
                    pairs += 1
                    inl.append(v.inliers)
                    g = v.sane and v.inliers >= R.LOCAL_MIN_INLIERS
                    geo += g
                    hit |= g
                    ok += v.ok
                    pair_rows.append((qi, c.image_id, v.inliers, bool(g), bool(v.ok)))
                    out[c.image_id] = v
                return out

            R.search_in_stages(q.local, search)
            per_query_geo += hit
        x = np.array(inl)
        res["variants"][name] = {
            "n": n, "desc_bytes": b, "pairs": pairs, "geometry_pass": geo, "ok": ok,
            "queries_with_geometry_pass": per_query_geo,
            "inliers_ge": {t: int((x >= t).sum()) for t in (6, 8, 10, 12, 15)},
            "inliers_mean": float(x.mean()) if len(x) else 0.0,
            "cpu_s": time.process_time() - c1, "pairs_rows": pair_rows}
        print(name, {k: v for k, v in res["variants"][name].items() if k != "pairs_rows"},
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        a.out.write_text(json.dumps(res))
    return 0


def _v1_record(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions in px, descriptors) of a format-1 record (HWKV: uint16 positions in 1/8 px,
    32-byte descriptors): what the saved study index holds, to check the replay against."""
    n = int(np.frombuffer(buf[4:6].tobytes(), "<u2")[0])
    xy = np.frombuffer(buf[10:10 + 4 * n].tobytes(), "<u2").reshape(n, 2) / 8.0
    return xy, buf[10 + 4 * n:10 + 36 * n].reshape(n, 32)


def cmd_rewrite(a: argparse.Namespace) -> int:
    """A copy of a saved study index (``--index``, read only: its files are linked, never
    written) whose verification records are rewritten as variant NxB from each set's stored
    keypoints: the known images' from the corpus, the real scale images' from the scale set,
    the recombined ones replayed as the study made them (:func:`hashwatch.scalestudy.recombine`,
    same seed and order; every replayed set is checked against the saved record's 128)."""
    from rich.progress import Progress

    from hashwatch.robust.keypoint_index import FORMAT, encode_verify, subset
    from hashwatch.scaleset import iter_shards
    from hashwatch.scalestudy import SCALE_ID0, SYNTH_ID0, recombine

    (_name, n_keep, nbytes), = _variants(a.variant)
    src, out = a.index, a.out
    man = json.loads((src / "manifest.json").read_text())
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name not in ("verify.bin", "verify.off.npy", "manifest.json", ".lock") and \
                not (out / f.name).exists():
            os.symlink(f.resolve(), out / f.name)
    slots = np.load(src / "slots.npy")
    old_off = np.load(src / "verify.off.npy")
    old = np.memmap(src / "verify.bin", np.uint8, "r")
    local, _ = _known(a.corpus, a.known, a.seed)
    shards = list(iter_shards(a.set, a.real))
    starts = np.r_[0, np.cumsum([len(sh) for sh in shards])]

    def real(i: int):  # type: ignore[no-untyped-def]
        s = int(np.searchsorted(starts, i, side="right") - 1)
        return shards[s].local(int(i - starts[s]))

    rng = np.random.default_rng([a.seed, 0x5CA1E])
    synth: dict[int, object] = {}
    n_synth_done = 0

    def synthetic(j: int):  # type: ignore[no-untyped-def]
        nonlocal n_synth_done
        while j not in synth:
            pairs = rng.integers(0, a.real, size=(5000, 2))
            synth.clear()
            for t, (p, q) in enumerate(pairs):
                synth[n_synth_done + t] = recombine(real(int(p)), real(int(q)), rng)
            n_synth_done += 5000
        return synth[j]

    offs = np.zeros(len(slots) + 1, np.uint64)
    checked = 0
    fd = os.open(out / "verify.bin", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh, Progress() as prog:
        task = prog.add_task("records", total=len(slots))
        pos = 0
        for s, image_id in enumerate(slots.tolist()):
            if image_id < SCALE_ID0:
                f = local[image_id]
            elif image_id < SYNTH_ID0:
                f = real(image_id - SCALE_ID0)
            else:
                f = synthetic(image_id - SYNTH_ID0)
            if s % a.check_every == 0:  # the replay must give the saved record's keypoints
                xy, d = _v1_record(old[int(old_off[s]):int(old_off[s + 1])])
                ref = subset(f, 128)
                if not (np.array_equal(d, ref.desc) and
                        np.abs(xy - ref.xy).max(initial=0) <= 1 / 16 + 1e-6):
                    raise SystemExit(f"slot {s} (image {image_id}): replay differs from the "
                                     "saved record")
                checked += 1
            r = encode_verify(subset(f, n_keep), nbytes)
            fh.write(r)
            pos += len(r)
            offs[s + 1] = pos
            if s % 10000 == 0:
                prog.update(task, completed=s)
    np.save(out / "verify.off.npy", offs)
    man.update({"format": FORMAT, "verify_bytes": int(pos),
                "params": {**man["params"], "n_verify": n_keep, "desc_bytes": nbytes}})
    (out / "manifest.json").write_text(json.dumps(man))
    print(f"{len(slots):,} records, {pos:,} bytes ({pos / len(slots):,.1f} per set); "
          f"{checked:,} checked against the saved records", file=sys.stderr)
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from hashwatch.scalestudy import MUST_HAVE

    rows = {}
    for line in a.out.read_text().splitlines():
        d = json.loads(line)
        if d["edit"] in rows:
            rows[d["edit"]]["verified"].update(d["verified"])
            rows[d["edit"]].setdefault("cpu_s", {}).update(d.get("cpu_s", {}))
        else:
            rows[d["edit"]] = d
    names = [v for v in _variants(a.variants)] if a.variants else None
    if names is None:
        seen: dict[str, None] = {}
        for d in rows.values():
            seen.update(dict.fromkeys(d["verified"]))
        names = _variants(",".join(seen))
    edits = [e for e in rows if all(v[0] in rows[e]["verified"] for v in names)]
    print(f"{len(edits)} edits, queries to the keypoint tier: "
          f"{sum(sum(not h for h in rows[e]['hash_core']) for e in edits):,}\n")
    print("| record (NxB: keypoints x descriptor bytes; rR: match radius R) | "
          "bytes per image on disk | queries verified | "
          "mean recall, core views + pairwise | mean recall, every view + pairwise | "
          "lowest must-have (every view) | CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = None
    for name, n, b in names:
        ver = tot_core = tot_all = 0.0
        must = []
        cpu = 0.0
        for e in edits:
            d = rows[e]
            got = d["verified"][name]
            ver += sum(bool(x) for x in got)
            core = [h or bool(x) for h, x in zip(d["hash_core"], got, strict=True)]
            alls = [h or bool(x) for h, x in zip(d["hash_all"], got, strict=True)]
            tot_core += 100 * sum(core) / d["n"]
            tot_all += 100 * sum(alls) / d["n"]
            if e in MUST_HAVE:
                must.append((100 * sum(alls) / d["n"], e))
            cpu += d.get("cpu_s", {}).get(name, 0.0)
        m_core, m_all = tot_core / len(edits), tot_all / len(edits)
        if base is None:
            base = (ver, m_core, m_all)
        lo = min(must) if must else (float("nan"), "-")
        print(f"| {name} | {disk_bytes(n, b):,} | {int(ver):,} ({int(ver - base[0]):+d}) | "
              f"{m_core:.2f} ({m_core - base[1]:+.2f}) | {m_all:.2f} ({m_all - base[2]:+.2f}) | "
              f"{lo[1]} {lo[0]:.1f} | {cpu:.0f} |")
    if a.edit_table:
        print("\n| edit | " + " | ".join(v[0] for v in names) + " |")
        print("|---|" + "---:|" * len(names))
        for e in edits:
            c = [sum(bool(x) for x in rows[e]["verified"][v[0]]) for v in names]
            if len(set(c)) > 1:
                print(f"| {e} | " + " | ".join(str(x) for x in c) + " |")
    if a.chance:
        ch = json.loads(a.chance.read_text())
        print(f"\nchance side: {ch['distractors']:,} distractor queries against their nominees "
              f"among {ch['known']:,} known sets\n")
        print("| record | pairs verified | geometry passes (chance alignments) | queries with one "
              "| false matches | pairs with >= 10 / >= 12 inliers | mean inliers |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for v in ch["variants"].values():
            print(f"| {v['n']} x {v['desc_bytes']} | {v['pairs']:,} | {v['geometry_pass']} | "
                  f"{v['queries_with_geometry_pass']} | {v['ok']} | {v['inliers_ge']['10']} / "
                  f"{v['inliers_ge']['12']} | {v['inliers_mean']:.2f} |")
    return 0


def cmd_rates(a: argparse.Namespace) -> int:
    """Per-descriptor rates behind the verification radius on a shortened record. True
    correspondences: for each known image of ``hashwatch eval``'s split and each edit, the
    query is fitted to the known image's 128-keypoint record with full descriptors (the
    matcher's geometric check at 48 of 256 bits: sane, >= --min-inliers); every stored keypoint
    whose mapped position has query keypoints within 2 px is paired with the one nearest in
    descriptor (all 256 tests), whatever its distance, so the radius under test does not pick
    the pairs. Chance: every descriptor of --distractors distractor queries (the eval's seeded
    sample) against every --every-th known record, its smallest distance. For each radius R:
    the share of true correspondences within R and the chance rate (a query descriptor has a
    stored one within R), on 256 tests at 48 and on the first B bytes' 8 B tests."""
    import cv2

    from hashwatch import evaluate as E
    from hashwatch import robust as R
    from hashwatch.edits import edit_names
    from hashwatch.robust import geometry as G
    from hashwatch.robust.keypoint_index import decode_verify, encode_verify, subset
    from hashwatch.robust.kpcore import hamming_matrix, prefix_desc
    from hashwatch.robust.regions import query_rectangles

    cv2.setNumThreads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    known, _, distractors = E.split_eval(E.corpus_files(E.resolve_corpus(a.corpus)), a.known,
                                         a.seed, a.distractors)
    kpix = [E.load_pixels(p) for p in known]
    recs = [decode_verify(encode_verify(subset(R.known_local(p), 128), 32)) for p in kpix]
    nbs = [int(x) for x in a.bytes.split(",")]
    order = {e: i for i, e in enumerate(edit_names())}

    def query(img: np.ndarray) -> R.LocalFeatures | None:
        boxes = R.query_regions(img)
        return R.query_local(img, boxes, rects=query_rectangles(img, boxes))

    true: dict[int, list[int]] = {32: [], **{b: [] for b in nbs}}
    for en in a.edits.split(","):
        for ki, k in enumerate(recs):
            img, _ = E.make_query(en, order[en], ki, kpix, [], a.seed)
            q = query(img)
            if q is None or len(q.desc) == 0:
                continue
            n, sane, m = G.fit_local(q, k)
            if m is None or not sane or n < a.min_inliers:
                continue
            pts = np.c_[k.xy, np.ones(len(k.xy))] @ m.T
            mapped = pts[:, :2] / pts[:, 2:3]
            near = np.hypot(mapped[:, None, 0] - q.xy[None, :, 0],
                            mapped[:, None, 1] - q.xy[None, :, 1]) <= 2.0
            d = {32: hamming_matrix(k.desc, q.desc)}
            d.update({b: hamming_matrix(prefix_desc(k.desc, b), prefix_desc(q.desc, b))
                      for b in nbs})
            for i in np.flatnonzero(near.any(axis=1)):
                js = np.flatnonzero(near[i])
                j = js[np.argmin(d[32][i, js])]
                for b in true:
                    true[b].append(int(d[b][i, j]))
        print(f"{en}: {len(true[32]):,} true correspondences so far", file=sys.stderr, flush=True)
    chance: dict[int, list[np.ndarray]] = {b: [] for b in true}
    for p in distractors[: a.distractors]:
        q = query(E.load_pixels(p))
        if q is None or len(q.desc) == 0:
            continue
        for k in recs[:: a.every]:
            for b in chance:
                chance[b].append(hamming_matrix(prefix_desc(q.desc, b),
                                                prefix_desc(k.desc, b)).min(axis=1))
    tr = {b: np.array(v) for b, v in true.items()}
    ch = {b: np.concatenate(v) for b, v in chance.items()}
    res: dict = {"true_pairs": len(tr[32]), "chance_minima": len(ch[32]), "rates": {}}
    print(f"\n{len(tr[32]):,} true correspondences ({a.edits}); {len(ch[32]):,} chance minima "
          f"({a.distractors} distractors x every {a.every}th of {len(recs)} known records)\n")
    print("| tests compared | radius | true correspondences within | chance rate (a stored "
          "descriptor within) |")
    print("|---|---:|---:|---:|")
    rows = [(32, 48)] + [(b, r) for b in nbs for r in range(round(48 * b / 32) - 3,
                                                             round(48 * b / 32) + 4)]
    for b, r in rows:
        t, c = float((tr[b] <= r).mean()), float((ch[b] <= r).mean())
        res["rates"][f"{8 * b}/{r}"] = {"true": t, "chance": c}
        print(f"| {8 * b} | {r} | {100 * t:.2f}% | {c:.3e} |")
    res["cpu_s"], res["wall_s"] = time.process_time() - c0, time.perf_counter() - t0
    a.out.write_text(json.dumps(res))
    print(f"\n{res['cpu_s']:.0f} s CPU, {res['wall_s']:.0f} s wall", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("pairwise", "chance"):
        p = sub.add_parser(name)
        p.add_argument("--queries", type=Path, required=True)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--variants", default="128x32,200x32,136x24,160x20,175x18,194x16,200x15")
        p.add_argument("--corpus", type=Path, default=None)
        p.add_argument("--known", type=int, default=200)
        p.add_argument("--seed", type=int, default=0)
        if name == "pairwise":
            p.add_argument("--edits", default="", help="default: the 60 single edits")
        else:
            p.add_argument("--max", type=int, default=None, help="first N distractors")
            p.add_argument("--index", type=Path, nargs="*", default=None,
                           help="saved study indexes to nominate from (10^6)")
            p.add_argument("--set", type=Path, default=None, help="scale set (with --index)")
            p.add_argument("--real", type=int, default=75000)
            p.add_argument("--radius-suffix", default="", help="e.g. r20 (with --index)")
    w = sub.add_parser("rewrite")
    w.add_argument("--index", type=Path, required=True, help="saved study index (read only)")
    w.add_argument("--set", type=Path, required=True)
    w.add_argument("--real", type=int, default=75000)
    w.add_argument("--variant", required=True, help="NxB: N keypoints, B descriptor bytes")
    w.add_argument("--out", type=Path, required=True)
    w.add_argument("--corpus", type=Path, default=None)
    w.add_argument("--known", type=int, default=200)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--check-every", type=int, default=97)
    r = sub.add_parser("report")
    r.add_argument("out", type=Path)
    r.add_argument("--variants", default="")
    r.add_argument("--chance", type=Path, default=None)
    r.add_argument("--edit-table", action="store_true")
    t = sub.add_parser("rates")
    t.add_argument("--bytes", default="24,25", help="descriptor bytes a record keeps")
    t.add_argument("--edits", default="mirror,trim20side,crop30c,rotate5,jpeg30,noise0.2,"
                   "resize0.5,stretch1.25+crop25,perspective12")
    t.add_argument("--known", type=int, default=60)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--min-inliers", type=int, default=30, help="fits that place the pairs")
    t.add_argument("--distractors", type=int, default=100)
    t.add_argument("--every", type=int, default=3, help="chance: every N-th known record")
    t.add_argument("--corpus", type=Path, default=None)
    t.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    return {"pairwise": cmd_pairwise, "chance": cmd_chance, "rewrite": cmd_rewrite,
            "report": cmd_report, "rates": cmd_rates}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
