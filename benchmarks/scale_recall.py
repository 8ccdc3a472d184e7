"""Recall of the whole cascade against a saved scale-study keypoint index, with the hash tier
holding every view or only the core views (issue 10's 16 GB target), in one pass.

    # the queries, once (``scale_study.py queries``: hash-tier views of every edited query, and
    # keypoints whenever the full and trimmed views alone miss the query's own image)
    .venv/bin/python benchmarks/scale_study.py queries --out Q --edits EDITS
    # every query the core views miss, through the product's keypoint search on the mapped
    # index (resumable: one file per edit in OUT; split over processes with --part/--parts)
    .venv/bin/python benchmarks/scale_recall.py run --index IDX1M --queries Q \\
        --set SET --real 75000 --edits EDITS --out OUT
    # per-edit recall, both hash-tier configurations, wrong-image matches, CPU per query
    .venv/bin/python benchmarks/scale_recall.py report OUT

Why one pass serves both configurations: the hash tier finds a query's own image or not
whatever the list size (its rows for the other images only add false matches, counted by the
hash tier's own per-pair rate, BENCHMARKS "Robust matching"), so a query's hash-tier outcome is
read from the query cache: ``hash_own`` (every stored view of its own image) and "the full and
trimmed views found it" (the cache computed keypoints exactly when they did not). The keypoint
tier runs only when the hash tier finds nothing, so it is run here for every query the core views
miss; with every view, only the queries whose ``hash_own`` is false take its verdict.

The keypoint search is the matcher's (:func:`hashwatch.robust.verify.search_in_stages`: plain,
mirrored and small-picture passes; each stage nominates ``KEYPOINT_CANDIDATES`` known images from
the mapped :class:`~hashwatch.robust.keypoint_index.KeypointIndex` and verifies each with
:func:`hashwatch.robust.verify.verify`, scene check included). A match on any image but the
query's own and its collage partners is a wrong-image match. "Nominated": the own image was among
the nominees of some stage (a miss that was nominated is lost in verification, one that was not
is lost in nomination). CPU per query is ``time.thread_time`` of the keypoint search.
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


def cmd_run(a: argparse.Namespace) -> int:
    import cv2
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    import hashwatch.robust as R
    from hashwatch.matcher import KEYPOINT_CANDIDATES
    from hashwatch.robust.keypoint_index import KeypointIndex
    from hashwatch.scalestudy import QueryCache

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from keypoint_cost import _study_views, apply_query_side

    cv2.setNumThreads(1)
    cache = QueryCache(a.queries)
    edits = [e for e in a.edits.split(",") if e]
    missing = [e for e in edits if not cache.has(e)]
    if missing:
        raise SystemExit(f"not in the query cache {a.queries}: {', '.join(missing)}")
    a.out.mkdir(parents=True, exist_ok=True)
    todo = [e for e in edits[a.part::a.parts] if not (a.out / f"{_safe(e)}.json").exists()]
    print(f"part {a.part}/{a.parts}: {len(todo)} edits to do", file=sys.stderr)
    if not todo:
        return 0
    views_of = _study_views(a.corpus, a.set, a.real, a.known, a.seed)

    ix = KeypointIndex.load(a.index, mmap=True)
    apply_query_side(ix, a)
    t0, c0 = time.perf_counter(), time.process_time()
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), "{task.fields[rate]}") as prog:
        task = prog.add_task("edits", total=len(todo), rate="")
        for name in todo:
            qs = cache.load(name)
            qtask = prog.add_task(name, total=len(qs), rate="")
            rows = []
            for q in qs:
                prog.advance(qtask)
                row = {"known": q.known, "hash_all": bool(q.hash_own),
                       "hash_core": q.local is None}
                if q.local is not None:
                    allowed = {q.known, *q.partners}
                    nominated = False

                    def search(stage: R.LocalFeatures, top: int | None,
                               q=q) -> dict[int, R.LocalVerdict]:
                        nonlocal nominated
                        cands = ix.search(stage, top=top or KEYPOINT_CANDIDATES)
                        nominated |= any(c.image_id == q.known for c in cands)
                        return {c.image_id: R.verify(stage, ix.features(c.slot),
                                                     lambda c=c: views_of(c.image_id))
                                for c in cands}

                    t = time.thread_time()
                    got = R.search_in_stages(q.local, search)
                    matched = sorted(i for i, v in got.items() if v.ok)
                    row.update({"kp_found": q.known in matched, "nominated": nominated,
                                "kp_wrong": [i for i in matched if i not in allowed],
                                "cpu_ms": 1e3 * (time.thread_time() - t)})
                rows.append(row)
            prog.remove_task(qtask)
            doc = {"edit": name, "index": str(a.index), "slots": ix.n_slots, "rows": rows,
                   "load": os.getloadavg(), "finished": time.strftime("%H:%M:%S", time.gmtime()),
                   "params": {k: getattr(ix.params, k)
                              for k in ("m", "coarse_probe", "ht", "max_df_share")}}
            tmp = a.out / f".{_safe(name)}.json.tmp"
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, a.out / f"{_safe(name)}.json")
            prog.advance(task)
    print(f"part {a.part}: {time.perf_counter() - t0:.0f} s wall, "
          f"{time.process_time() - c0:.0f} s CPU", file=sys.stderr)
    return 0


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "+-._" else "_" for c in name)


def edit_recall(rows: list[dict]) -> dict[str, float | int]:
    """Per-edit figures (% of the edit's queries) from one edit's rows: hash tier alone and
    the whole cascade with every view (``all``) and with the core views (``core``);
    ``lost_nomination`` / ``lost_verification``: queries the core cascade misses whose own image
    was / was not among some stage's nominees; wrong-image matches per configuration."""
    n = len(rows)
    kp = [r.get("kp_found", False) for r in rows]
    hall = [r["hash_all"] for r in rows]
    hcore = [r["hash_core"] for r in rows]
    casc_all = [h or k for h, k in zip(hall, kp, strict=True)]
    casc_core = [h or k for h, k in zip(hcore, kp, strict=True)]
    ran = [r for r in rows if "kp_found" in r]
    return {
        "n": n,
        "hash_all": 100 * sum(hall) / n, "hash_core": 100 * sum(hcore) / n,
        "all": 100 * sum(casc_all) / n, "core": 100 * sum(casc_core) / n,
        "keypoint_queries_core": len(ran),
        "keypoint_queries_all": sum(1 for r in ran if not r["hash_all"]),
        "lost_nomination": sum(1 for r in ran if not r["kp_found"] and not r["nominated"]),
        "lost_verification": sum(1 for r in ran if not r["kp_found"] and r["nominated"]),
        "wrong_core": sum(bool(r["kp_wrong"]) for r in ran),
        "wrong_all": sum(bool(r["kp_wrong"]) for r in ran if not r["hash_all"]),
    }


def cmd_report(a: argparse.Namespace) -> int:
    from hashwatch.edits import edit_names
    from hashwatch.scalestudy import MUST_HAVE

    docs = _load(a.outs)
    order = [e for e in edit_names() if e in docs]
    singles = set(edit_names()[:60])
    slots = {d["slots"] for d in docs.values()}
    held = set(a.held.split(",")) if a.held else None
    if held is not None:
        if a.queries is None:
            raise SystemExit("--held needs --queries")
        hits = crop_hits(docs, a.queries, a.corpus, a.known, a.seed)
    print(f"index slots: {', '.join(f'{s:,}' for s in sorted(slots))}; {len(order)} edits\n")
    extra = f" cascade, {a.held} |" if held else ""
    print("| edit | hash tier, every view | hash tier, core views | cascade, every view | "
          f"cascade, core views |{extra} keypoint queries (every / core) | core misses: "
          "nomination / verification | wrong-image (every / core) |")
    print("|---|---:|---:|---:|---:|" + ("---:|" if held else "") + "---:|---:|---:|")
    figs = {}
    cpu: list[float] = []
    for e in order:
        rows = docs[e]["rows"]
        f = figs[e] = edit_recall(rows)
        if held is not None:
            f["held"] = held_recall(rows, hits[e], held)
        cpu += [r["cpu_ms"] for r in rows if "cpu_ms" in r]
        col = f" {f['held']:.1f} |" if held is not None else ""
        print(f"| {e} | {f['hash_all']:.1f} | {f['hash_core']:.1f} | {f['all']:.1f} | "
              f"{f['core']:.1f} |{col} {f['keypoint_queries_all']} / "
              f"{f['keypoint_queries_core']} | "
              f"{f['lost_nomination']} / {f['lost_verification']} | "
              f"{f['wrong_all']} / {f['wrong_core']} |")
    print()
    for label, group in (("the 60 single edits", [e for e in order if e in singles]),
                         ("the combined edits", [e for e in order if e not in singles])):
        if not group:
            continue
        keys = ("hash_all", "hash_core", "all", "core") + (("held",) if held else ())
        m = {k: float(np.mean([figs[e][k] for e in group])) for k in keys}
        print(f"mean over {label} ({len(group)}): hash tier every view {m['hash_all']:.1f}, "
              f"core {m['hash_core']:.1f}; cascade every view {m['all']:.1f}, "
              f"core {m['core']:.1f}" + (f", {a.held} {m['held']:.1f}" if held else ""))
    must = [(e, figs[e]["all"], figs[e]["core"]) for e in MUST_HAVE if e in figs]
    if must:
        lo_all = min(must, key=lambda t: t[1])
        lo_core = min(must, key=lambda t: t[2])
        print(f"lowest must-have: every view {lo_all[0]} {lo_all[1]:.1f}; "
              f"core views {lo_core[0]} {lo_core[2]:.1f}")
    print(f"wrong-image matches: every view {sum(f['wrong_all'] for f in figs.values())}, "
          f"core views {sum(f['wrong_core'] for f in figs.values())}")
    if cpu:
        print(f"keypoint search CPU per query (core): p50 {np.percentile(cpu, 50):.1f} ms, "
              f"p99 {np.percentile(cpu, 99):.1f} ms over {len(cpu):,} queries")
    return 0


def _load(outs: list[Path]) -> dict[str, dict]:
    docs = {}
    for out in outs:
        for f in sorted(Path(out).glob("*.json")):
            d = json.loads(f.read_text())
            docs[d["edit"]] = d
    return docs


def crop_hits(docs: dict[str, dict], queries: Path, corpus: Path | None, n_known: int,
              seed: int) -> dict[str, list[set[str]]]:
    """Per edit, per query: the crop views of its own known image that the hash tier
    matches alone (computed only where the core views miss: elsewhere they do not matter)."""
    import hashwatch.robust as R
    from hashwatch.scalestudy import QueryCache

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from keypoint_cost import _known_views

    known_views = _known_views(corpus, n_known, seed)
    crops = {v for v in R.KNOWN_VIEWS if v not in ("full", "trim")}
    cache = QueryCache(queries)
    hits: dict[str, list[set[str]]] = {}
    for e, d in docs.items():
        hits[e] = [{k.variant for k in known_views[q.known] if k.variant in crops
                    and not r["hash_core"] and R.hash_match(q.views, [k]) is not None}
                   for q, r in zip(cache.load(e), d["rows"], strict=True)]
    return hits


def held_recall(rows: list[dict], hits: list[set[str]], held: set[str]) -> float:
    """% of an edit's queries the cascade finds when the hash tier holds the core views
    and the crop views ``held``."""
    ok = [r["hash_core"] or bool(h & held) or r.get("kp_found", False)
          for r, h in zip(rows, hits, strict=True)]
    return 100 * sum(ok) / len(ok)


def cmd_views(a: argparse.Namespace) -> int:
    """Recall when the hash tier holds the core views plus a subset of the centred-crop views,
    for every subset, against the hash-tier bytes it costs at --target known images."""
    from itertools import combinations

    import hashwatch.robust as R
    from hashwatch.edits import edit_names
    from hashwatch.scaleset import VARIANTS, iter_shards
    from hashwatch.scalestudy import MUST_HAVE

    # views stored per known image, counted on the generated scale set (as `lists add` stores)
    present = np.zeros(len(VARIANTS))
    n_img = 0
    for sh in iter_shards(a.set, a.real):
        present += (np.asarray(sh.pdq_quality) >= 0).sum(axis=0)
        n_img += len(sh)
    per_image = dict(zip(VARIANTS, present / n_img, strict=True))
    crops = [v for v in R.KNOWN_VIEWS if v not in ("full", "trim")]
    docs = _load(a.outs)
    order = [e for e in edit_names() if e in docs]
    singles = set(edit_names()[:60])
    hits = crop_hits(docs, a.queries, a.corpus, a.known, a.seed)
    print(f"views per known image (generated scale set, {n_img:,} images): "
          + ", ".join(f"{v} {per_image[v]:.2f}" for v in VARIANTS))
    print(f"hash tier at {a.target:,} known images: {a.entry_bytes} B per entry "
          "(HammingIndex, BENCHMARKS 'Cost')\n")
    print("| crop views kept beside full + trim | entries per image | hash tier GB | "
          "mean, 60 single edits | mean, combined edits | lowest must-have | crop50c | "
          "crop60c | crop70c |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for k in range(len(crops) + 1):
        for sub in combinations(crops, k):
            per = {e: held_recall(docs[e]["rows"], hits[e], set(sub)) for e in order}
            ent = per_image["full"] + per_image["trim"] + sum(per_image[v] for v in sub)
            gb = ent * a.target * a.entry_bytes / 1e9
            s1 = [per[e] for e in order if e in singles]
            s2 = [per[e] for e in order if e not in singles]
            must = min((per[e], e) for e in MUST_HAVE if e in per)
            print(f"| {' '.join(sub) or '-'} | {ent:.2f} | {gb:.1f} | {np.mean(s1):.1f} | "
                  f"{np.mean(s2) if s2 else float('nan'):.1f} | {must[1]} {must[0]:.1f} | "
                  + " | ".join(f"{per.get(e, float('nan')):.1f}"
                               for e in ("crop50c", "crop60c", "crop70c")) + " |")
    return 0


def _suite(p: argparse.ArgumentParser) -> None:
    """The evaluation's known images (as `scale_study.py queries` drew them)."""
    p.add_argument("--known", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corpus", type=Path, default=None)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from keypoint_cost import query_side_options

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="the keypoint tier for every query the core views miss")
    r.add_argument("--index", type=Path, required=True, help="a saved KeypointIndex folder")
    r.add_argument("--queries", type=Path, required=True, help="scale_study.py query cache")
    r.add_argument("--set", type=Path, required=True, help="the generated scale set")
    r.add_argument("--real", type=int, default=75_000)
    r.add_argument("--edits", required=True, help="comma-separated edit names")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--part", type=int, default=0)
    r.add_argument("--parts", type=int, default=1)
    query_side_options(r)
    _suite(r)
    r.set_defaults(fn=cmd_run)
    rp = sub.add_parser("report", help="per-edit recall tables of one or more OUT folders")
    rp.add_argument("outs", nargs="+", type=Path)
    rp.add_argument("--held", default=None,
                    help="a column for the hash tier holding full, trim and these crop views "
                         "(comma-separated, e.g. crop80,crop60; needs --queries)")
    rp.add_argument("--queries", type=Path, default=None)
    _suite(rp)
    rp.set_defaults(fn=cmd_report)
    vw = sub.add_parser("views", help="recall per subset of the crop views in the hash tier")
    vw.add_argument("outs", nargs="+", type=Path)
    vw.add_argument("--queries", type=Path, required=True)
    vw.add_argument("--set", type=Path, required=True)
    vw.add_argument("--real", type=int, default=75_000)
    vw.add_argument("--target", type=int, default=20_000_000)
    vw.add_argument("--entry-bytes", type=int, default=111)
    _suite(vw)
    vw.set_defaults(fn=cmd_views)
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
