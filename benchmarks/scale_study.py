"""Scale study: the robust matcher with the evaluation's known images among 10^5-10^6 generated
known images (and an index-only nomination study at 2*10^7).

    # everything, from a clean checkout (the scale set is generated, never downloaded;
    # resumable: run it again and it goes on where it stopped)
    .venv/bin/python benchmarks/scale_study.py all --dir /work/scratch/scale --real 75000 \\
        --sizes 200000,500000,1000000 --workers 2

    # or step by step:
    # 1. features of the generated scale set (resumable; run under nice, it takes hours)
    nice -n 19 .venv/bin/python benchmarks/scale_study.py generate --n 75000 --workers 2 \\
        --out DIR/set
    # 2. the queries (every edit of the 200 known images, every distractor), once
    .venv/bin/python benchmarks/scale_study.py queries --out DIR/queries --edits EDITS
    # 3. the study at each size (under the bench lock)
    flock /work/coord/bench.lock .venv/bin/python benchmarks/scale_study.py run \\
        --set DIR/set --queries DIR/queries --real 75000 --sizes 200000,500000,1000000 \\
        --max-distractors 600 --all-distractors-from 1000000 --workers 3 --out DIR/out
    # 4. adding 250,000 to the 10^6 index while searching it; the tables and laws
    .venv/bin/python benchmarks/scale_study.py add --index-dir DIR/kpindex --set DIR/set \\
        --queries DIR/queries --real 75000 --out DIR/out/add.json
    .venv/bin/python benchmarks/scale_study.py report --out DIR/out

See BENCHMARKS.md ("Scale study") for what each step measures and the figures.
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


def _corpus(arg: Path | None) -> Path:
    from hashwatch.evaluate import resolve_corpus

    return resolve_corpus(arg)


def cmd_generate(a: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from hashwatch import scaleset as S
    from hashwatch.evaluate import corpus_files

    files = corpus_files(_corpus(a.corpus))
    _, _, sources = S.study_split(files, a.known, a.seed)
    print(f"{len(sources)} source photographs; {a.n:,} scale images into {a.out}",
          file=sys.stderr)
    t0 = time.perf_counter()
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn()) as prog:
        task = prog.add_task("shards", total=None)

        def tick(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        S.generate(a.out, a.n, sources, seed=a.seed, workers=a.workers, progress=tick)
    print(f"done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


def _write_vocab(voc, out: Path, t0: float, c0: float) -> int:
    """Save a vocabulary and say its size, digest and the wall / CPU time since t0 / c0."""
    out.parent.mkdir(parents=True, exist_ok=True)
    voc.save(out)
    print(f"wrote {out} ({out.stat().st_size:,} bytes, digest {voc.digest()[:16]}) in "
          f"{time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU",
          file=sys.stderr)
    return 0


def cmd_vocab(a: argparse.Namespace) -> int:
    """Train the frozen vocabulary on the descriptors of the first scale-set shards."""
    import numpy as np

    from hashwatch import scaleset as S
    from hashwatch.robust.vocab import train

    descs = [S.Shard.load(S.shard_path(a.set, s)).kp_desc for s in range(a.shards)]
    d = np.ascontiguousarray(np.concatenate(descs))
    if a.max_descriptors and len(d) > a.max_descriptors:
        rng = np.random.default_rng(a.seed)
        d = d[np.sort(rng.choice(len(d), a.max_descriptors, replace=False))]
    print(f"training {a.k1} x {a.k2} words on {len(d):,} descriptors", file=sys.stderr)
    t0, c0 = time.perf_counter(), time.process_time()
    voc = train(d, a.k1, a.k2, iters=a.iters, seed=a.seed, fine_seeding=a.fine_seeding,
                progress=lambda i, n: print(f"  cell {i}/{n}", file=sys.stderr)
                if i % 64 == 0 else None)
    return _write_vocab(voc, a.out, t0, c0)


def cmd_sigbits(a: argparse.Namespace) -> int:
    """Give a trained vocabulary per-word signature bits (the "word" scheme,
    ``vocab.choose_word_signature_bits``) chosen on the descriptors of the first scale-set
    shards; the centres are kept, so the words of every descriptor stay the same."""
    import numpy as np

    from hashwatch import scaleset as S
    from hashwatch.robust.vocab import Vocabulary, choose_signature_bits, choose_word_signature_bits

    voc = Vocabulary.load(a.vocab)
    d = np.ascontiguousarray(np.concatenate(
        [S.Shard.load(S.shard_path(a.set, s)).kp_desc for s in range(a.shards)]))
    t0, c0 = time.perf_counter(), time.process_time()
    words = np.empty(len(d), np.int64)
    for s in range(0, len(d), 1 << 22):
        words[s:s + (1 << 22)] = voc.assign(d[s:s + (1 << 22)], 1)[0][:, 0]
    glob = voc.sig_bits if voc.sig_scheme == "global" else choose_signature_bits(
        d[:1_000_000], words[:1_000_000])
    print(f"choosing {voc.n_words:,} words' signature bits on {len(d):,} descriptors",
          file=sys.stderr)
    voc.sig_bits = choose_word_signature_bits(
        d, words, voc.k1, voc.k2, glob, shrink=a.shrink, max_corr=a.max_corr,
        progress=lambda i, n: print(f"  cell {i}/{n}", file=sys.stderr) if i % 64 == 0 else None)
    return _write_vocab(voc, a.out, t0, c0)


def cmd_queries(a: argparse.Namespace) -> int:
    """Compute the study's queries once (every edit of every known image, every distractor)."""
    from hashwatch.scalestudy import QueryCache, build_queries, load_study_set

    t0, c0 = time.perf_counter(), time.process_time()
    ss = load_study_set(_corpus(a.corpus), a.known, a.seed,
                        a.edits.split(",") if a.edits else None)
    print(f"{len(ss.known)} known, {len(ss.distractors)} distractors, {len(ss.edits)} edits",
          file=sys.stderr)
    build_queries(ss, QueryCache(a.out), say=lambda s: print(
        f"[{time.perf_counter() - t0:7.0f}s] {s}", file=sys.stderr, flush=True))
    print(f"done: {time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU",
          file=sys.stderr)
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    """The cascade at each list size (the index grows from one to the next); one JSON result
    per size in --out."""
    import cv2

    from hashwatch.robust.keypoint_index import KeypointParams
    from hashwatch.scalestudy import QueryCache, load_study_set, run_sizes, save_result

    cv2.setNumThreads(1)
    vocab = None
    if a.vocab:  # an experiment's vocabulary; each index keeps its own copy (vocab.npz)
        from hashwatch.robust.vocab import Vocabulary

        vocab = Vocabulary.load(a.vocab)
        print(f"vocabulary {a.vocab}: {vocab.n_words:,} words, digest {vocab.digest()[:16]}",
              file=sys.stderr)
    t0 = time.perf_counter()
    ss = load_study_set(_corpus(a.corpus), a.known, a.seed,
                        a.edits.split(",") if a.edits else None)
    cache = QueryCache(a.queries)
    ss.edits = [e for e in ss.edits if cache.has(e)]
    params = KeypointParams(**json.loads(a.params)) if a.params else None
    sizes = [int(x) for x in a.sizes.split(",")]
    suffix = "-core" if a.hash_views == "core" else ""
    if all((a.out / f"size-{n}{suffix}.json").exists() for n in sizes) and not a.force:
        print("every size exists (--force to run again)", file=sys.stderr)
        return 0

    def cpu() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    c0, w0 = cpu(), time.perf_counter()
    for res in run_sizes(ss, cache, a.set, sizes, n_real=a.real, params=params, vocab=vocab,
                         top=a.top,
                         hash_views=a.hash_views, index_dir=a.index_dir, workers=a.workers,
                         max_distractors=a.max_distractors,
                         all_distractors_from=a.all_distractors_from,
                         scene_every=a.scene_every,
                         say=lambda s: print(f"[{time.perf_counter() - t0:7.0f}s] {s}",
                                             file=sys.stderr, flush=True)):
        res.build["run_wall_s"] = time.perf_counter() - w0
        res.build["run_cpu_s"] = cpu() - c0
        res.build["load_before"], res.build["load_after"] = a.load_before, os.getloadavg()[0]
        out = a.out / f"size-{res.n_scale}{suffix}.json"
        save_result(res, out)
        print(f"wrote {out}", file=sys.stderr)
        c0, w0 = cpu(), time.perf_counter()
        a.load_before = os.getloadavg()[0]
    return 0


def cmd_nominate(a: argparse.Namespace) -> int:
    """Index-only nomination with synthetic keypoint sets up to --total."""
    import cv2

    from hashwatch.robust.keypoint_index import KeypointParams
    from hashwatch.scalestudy import QueryCache, load_study_set, nominate

    cv2.setNumThreads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    load0 = os.getloadavg()[0]
    ss = load_study_set(_corpus(a.corpus), a.known, a.seed,
                        a.edits.split(",") if a.edits else None)
    cache = QueryCache(a.queries)
    ss.edits = [e for e in ss.edits if cache.has(e)]
    params = KeypointParams(**json.loads(a.params)) if a.params else None
    out = nominate(ss, cache, a.set, a.real, a.total, params=params, top=a.top,
                   say=lambda s: print(f"[{time.perf_counter() - t0:7.0f}s] {s}",
                                       file=sys.stderr, flush=True))
    out["run"] = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                  "load_before": load0, "load_after": os.getloadavg()[0],
                  "params": a.params, "top": a.top}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out))
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


def cmd_add(a: argparse.Namespace) -> int:
    """Add --n keypoint sets to a saved index while a thread keeps searching it; and the
    known-image feature rate on --workers processes over corpus photographs."""
    import cv2

    from hashwatch.evaluate import corpus_files
    from hashwatch.scaleset import study_split
    from hashwatch.scalestudy import QueryCache, add_month, feature_rate

    cv2.setNumThreads(1)
    load0 = os.getloadavg()[0]
    out: dict = {"load_before": load0}
    if a.feature_images:
        _, _, sources = study_split(corpus_files(_corpus(a.corpus)), 200, 0)
        # photographs of camera sizes (481x321 to 1024x768), not the 128 px flower set
        photos = [p for p in sources if "flowers" not in str(p)]
        picked = [photos[i % len(photos)] for i in range(a.feature_images)]
        out["features"] = feature_rate(picked, a.workers)
        print(f"features: {out['features']}", file=sys.stderr)
    if a.n:
        qs = [q.local for q in QueryCache(a.queries).load("distractors")[:200]
              if q.local is not None]
        out["add"] = add_month(a.index_dir, a.set, a.real, a.n, qs,
                               say=lambda s: print(s, file=sys.stderr, flush=True))
        print(f"add: {out['add']}", file=sys.stderr)
    out["load_after"] = os.getloadavg()[0]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out))
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    """Markdown tables and fitted laws from the results in --out."""
    import math

    import numpy as np

    from hashwatch.edits import edit_names
    from hashwatch.scalestudy import fit_affine, fit_power, load_result, pct, summarise_size

    names = edit_names()
    single, combined = names[:60], names[60:]
    lines = []
    sizes = sorted(a.out.glob("size-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    sums = [summarise_size(load_result(p), single, combined) for p in sizes]
    if sums:
        lines += ["| known images (real generated + recombined) | mean recall, 60 edits | hash "
                  "tier alone | pairwise, 128 kept | exact (200 stored) | lowest must-have "
                  "| nominated (of verifiable) | false matches | nominees verified per "
                  "keypoint-tier query (mean) | keypoint tier CPU p50 / p99 ms (edited) | "
                  "of which nomination p50 / p99 | unmatched (distractor) CPU p50 / p99 ms | "
                  "extract p50 / p99 ms | postings scanned p50 |",
                  "|---|---:|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|"]
        for s in sums:
            fm = ", ".join(f"{k} {v}" for k, v in sorted(s.false.items())) or "0"
            t = s.t
            lines.append(
                f"| {s.n_known:,} ({s.n_real:,} + {s.n_known - 200 - s.n_real:,}) "
                f"| {100 * s.mean_single:.1f}% | {100 * s.mean_single_hash:.1f}% "
                f"| {100 * s.mean_single_ref:.1f}% | {100 * s.mean_single_full:.1f}% "
                f"| {s.min_must[0]} {100 * s.min_must[1]:.1f}% "
                f"| {100 * s.nominated:.1f}% | {fm} | {s.candidates['verified_mean']:.1f} "
                f"| {t.get('cpu_p50_ms', math.nan):.1f} / {t.get('cpu_p99_ms', math.nan):.1f} "
                f"| {t['search_p50_ms']:.1f} / {t['search_p99_ms']:.1f} "
                f"| {t.get('cpu_distractor_p50_ms', math.nan):.0f} / "
                f"{t.get('cpu_distractor_p99_ms', math.nan):.0f} "
                f"| {t['extract_p50_ms']:.1f} / {t['extract_p99_ms']:.1f} "
                f"| {t['scanned_p50']:,.0f} |")
        lines += ["", "| known images | keypoint tier RAM (postings + tables) | RSS of a query "
                  "process, anonymous + mapped file (largest) | index folder on disk "
                  "| per image on disk (without "
                  "vocabulary and df) | hash rows "
                  "(real images) | add CPU per image (keypoint index) | build wall / CPU s | "
                  "run wall / CPU s | peak RSS | load before -> after | chance alignments "
                  "verified (recombined) | most inliers | P(geometry) per nominee | "
                  "P(scene) | per query |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
                  "---:|"]
        for s in sums:
            z, b = s.sizes, s.build
            n_img = s.n_known
            per_img = (z.get("index_dir_bytes", math.nan) - z.get("index_fixed_bytes", 0)) / n_img
            lines.append(
                f"| {n_img:,} | {z.get('ram_bytes', math.nan) / 2**20:,.0f} MiB "
                f"| {z.get('query_RssAnon_mib', math.nan):,.0f} + "
                f"{z.get('query_RssFile_mib', math.nan):,.0f} MiB "
                f"| {z.get('index_dir_bytes', math.nan) / 2**20:,.0f} MiB "
                f"| {per_img:,.0f} B "
                f"| {z['hash_rows']:,.0f} "
                f"| {1000 * b.get('keypoint_add_cpu_s', math.nan) / n_img:.2f} ms "
                f"| {b.get('wall_s', 0):.0f} / {b.get('cpu_s', 0):.0f} "
                f"| {b.get('run_wall_s', 0):.0f} / {b.get('run_cpu_s', 0):.0f} "
                f"| {z['rss_mib'] / 1024:.2f} GiB "
                f"| {b.get('load_before', 0):.1f} -> {b.get('load_after', 0):.1f} "
                f"| {s.candidates['chance']:,.0f} ({s.candidates['chance_synthetic']:,.0f}) "
                f"| {s.candidates['max_inliers']:.0f} | {s.chance_rate[0]:.1e} "
                f"| {s.chance_rate[1]:.1e} | {s.chance_rate[2]:.1e} |")
        if len(sums) >= 2:
            n = [s.n_known for s in sums]
            laws = []
            series = (
                ("keypoint tier RAM bytes", [s.sizes.get("ram_bytes", math.nan) for s in sums]),
                ("index folder bytes", [s.sizes.get("index_dir_bytes", math.nan)
                                        for s in sums]),
                ("keypoint tier CPU p50 ms", [s.t.get("cpu_p50_ms", math.nan) for s in sums]),
                ("keypoint tier CPU p99 ms", [s.t.get("cpu_p99_ms", math.nan) for s in sums]),
                ("nomination p50 ms", [s.t["search_p50_ms"] for s in sums]),
                ("nomination p99 ms", [s.t["search_p99_ms"] for s in sums]),
                ("postings scanned p50", [s.t["scanned_p50"] for s in sums]),
                ("nominees verified per query", [s.candidates["verified_mean"] for s in sums]),
                ("P(geometry) per nominee", [s.chance_rate[0] for s in sums]),
                ("false matches per query (keypoint tier)", [s.chance_rate[2] for s in sums]),
            )
            for label, y in series:
                a0, c = fit_affine(n, y)
                k, bb = fit_power(n, y)
                laws.append(f"- {label}: measured " + ", ".join(
                    f"{v:.3g} at {x:,}" for x, v in zip(n, y, strict=True))
                    + f"; affine {a0:.4g} + {c:.4g} N (-> {a0 + c * 2e7:.3g} at 20M); "
                    f"power {k:.4g} N^{bb:.3f} (-> {k * 2e7 ** bb:.3g} at 20M)")
            miss = [max(1e-9, 1 - s.nominated) for s in sums]
            k, bb = fit_power(n, miss)
            laws.append(f"- nomination miss rate: {k:.3g} N^{bb:.3f} (-> {100 * k * 2e7 ** bb:.2f}%"
                        " at 20M); measured " + ", ".join(
                            f"{100 * m:.2f}% at {x:,}" for x, m in zip(n, miss, strict=True)))
            lines += ["", "Fitted laws (N = known images; least squares, affine in N, power "
                      "in log-log):", *laws]
            # per-query false-match rate of the keypoint tier at 20M: P(scene | chance) pooled
            # over the sizes (a property of the check, not of N), P(geometry) per nominee
            # from its power law, nominees per unmatched query as measured at the largest size
            from hashwatch import robust as R
            from hashwatch.evaluate import share_tail_rate, tail_rate
            from hashwatch.scalestudy import scene_alignments

            sc = np.concatenate([scene_alignments(load_result(p)) for p in sizes])
            p_pdq = tail_rate(np.minimum(sc[:, 2], 255).astype(np.int16),
                              R.SCENE_PDQ_MAX)[0] if len(sc) >= 1000 else math.nan
            p_rd = share_tail_rate(sc[:, 3], R.SCENE_REDETECT_MIN)
            p_scene = float(np.nansum([p_pdq, p_rd]))
            kg, bg = fit_power(n, [s.chance_rate[0] for s in sums])
            p_geo = kg * 2e7 ** bg
            noms = sums[-1].candidates["verified_distractor_mean"]
            lines.append(
                f"- keypoint tier per query at 20M: {noms:.1f} nominees verified per unmatched "
                f"query (at {n[-1]:,}) x P(geometry) {p_geo:.2e} (power law above) x "
                f"P(scene) {p_scene:.2e} (pooled over {len(sc):,} chance alignments the scene "
                f"check ran on: aligned PDQ {p_pdq:.1e}, re-detection {p_rd:.1e}; most "
                f"re-detected {sc[:, 3].max():.3f}, lowest aligned PDQ {sc[:, 2].min():.0f}) "
                f"= **{noms * p_geo * p_scene:.1e}**")
        lines += ["", "| edit | " + " | ".join(f"{s.n_known:,}" for s in sums)
                  + " | pairwise 128 | exact 200 |", "|---|" + "---:|" * (len(sums) + 2)]
        for e in single:
            if e not in sums[-1].per_edit:
                continue
            lines.append(f"| {e} | " + " | ".join(
                f"{100 * s.per_edit[e][0]:.1f}" if e in s.per_edit else "-" for s in sums)
                + f" | {100 * sums[-1].per_edit[e][1]:.1f} | {100 * sums[-1].per_edit[e][2]:.1f} |")
    add = a.out / "add.json"
    if add.exists():
        d = json.loads(add.read_text())
        f, ad = d.get("features"), d.get("add")
        if f:
            lines += ["", f"Known-image features on {f['workers']} processes: {f['images']:,} "
                      f"images, {f['cpu_ms_per_image']:.1f} ms CPU per image (decode "
                      f"{1000 * f['decode_cpu_s'] / f['images']:.1f}), "
                      f"{f['wall_ms_per_image']:.1f} ms wall per image; 250,000 images: "
                      f"{250_000 * f['cpu_ms_per_image'] / 1000 / f['workers'] / 60:.0f} min "
                      f"on {f['workers']} dedicated cores."]
        if ad:
            lines += [f"Index add: {ad['n_add']:,} sets to {ad['n_before']:,} in "
                      f"{ad['wall_s']:.0f} s wall, {ad['writer_cpu_s']:.0f} s CPU "
                      f"({1000 * ad['writer_cpu_s'] / ad['n_add']:.2f} ms per image), "
                      f"{ad['saves']} saves; {ad['searches']} searches meanwhile, "
                      f"{ad['n_search_errors']} failed, p50 {ad['search_p50_ms']:.0f} ms wall."]
    noms = sorted(a.out.glob("nominate-*.json"))
    rows = []
    for pth in noms:
        d = json.loads(pth.read_text())
        ok = tot = 0
        for ranks in d["edits"].values():
            for r, verifiable in ranks:
                if verifiable:
                    tot += 1
                    ok += r >= 0
        rows.append((d["n_total"], ok / tot if tot else math.nan, tot,
                     1000 * pct(d["t_search"], 50), 1000 * pct(d["t_search"], 99),
                     1000 * pct(d["distractor_t_search"], 50),
                     float(np.median(d["scanned"])) if d["scanned"] else math.nan,
                     d["sizes"]["posting_bytes"], d["sizes"]["rss_mib"], d["build"]["wall_s"],
                     d["run"]["load_before"], d["run"]["load_after"]))
    rows.sort()
    if rows:
        lines += ["", "| keypoint sets (real + synthetic) | nominated among top 8 (of "
                  "verifiable) | queries | search p50 / p99 ms | distractor search p50 ms | "
                  "postings scanned p50 | postings RAM | peak RSS | build s | load |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in rows:
            lines.append(f"| {r[0]:,} | {100 * r[1]:.1f}% | {r[2]:,} | {r[3]:.1f} / {r[4]:.1f} "
                         f"| {r[5]:.1f} | {r[6]:,.0f} | {r[7] / 2**30:.2f} GiB | "
                         f"{r[8] / 1024:.2f} GiB | {r[9]:.0f} | {r[10]:.1f} -> {r[11]:.1f} |")
        n = [r[0] for r in rows]
        if len(rows) >= 2:
            laws = []
            for label, idx in (("search p50 ms", 3), ("search p99 ms", 4),
                               ("postings scanned p50", 6), ("postings bytes", 7)):
                a0, c = fit_affine(n, [r[idx] for r in rows])
                k, b = fit_power(n, [r[idx] for r in rows])
                laws.append(f"- {label}: affine {a0:.3g} + {c:.3g} N (-> {a0 + c * 2e7:.3g} at "
                            f"20M); power {k:.3g} N^{b:.2f} (-> {k * 2e7 ** b:.3g} at 20M)")
            miss = [max(1e-9, 1 - r[1]) for r in rows]
            k, b = fit_power(n, miss)
            laws.append(f"- nomination miss rate: {k:.3g} N^{b:.2f} (-> {100 * k * 2e7 ** b:.2f}% "
                        f"at 20M; measured points: "
                        + ", ".join(f"{100 * m:.2f}% at {x:,}" for x, m in zip(n, miss,
                                                                                 strict=True))
                        + ")")
            lines += ["", "Fitted laws (N = keypoint sets):", *laws]
    print("\n".join(lines))
    return 0


def cmd_all(a: argparse.Namespace) -> int:
    """generate -> queries (the 60 single edits) -> run -> add -> report, in --dir."""
    from hashwatch.edits import edit_names

    d: Path = a.dir
    common = ["--corpus", str(a.corpus)] if a.corpus else []
    steps = [
        ["generate", "--n", str(a.real), "--workers", str(a.workers), "--out", str(d / "set")],
        ["queries", "--out", str(d / "queries"), "--edits", ",".join(edit_names()[:60])],
        ["run", "--set", str(d / "set"), "--queries", str(d / "queries"), "--real",
         str(a.real), "--sizes", a.sizes, "--max-distractors", "600",
         "--all-distractors-from", a.sizes.split(",")[-1], "--workers", str(a.workers),
         "--index-dir", str(d / "kpindex"), "--out", str(d / "out")],
        ["add", "--index-dir", str(d / "kpindex"), "--set", str(d / "set"), "--queries",
         str(d / "queries"), "--real", str(a.real), "--workers", str(a.workers), "--out",
         str(d / "out" / "add.json")],
    ]
    for st in steps:
        if st[0] == "add" and (d / "out" / "add.json").exists():
            continue
        print(f"== scale_study.py {' '.join(st)}", file=sys.stderr, flush=True)
        rc = main(st + common)
        if rc:
            return rc
    return main(["report", "--out", str(d / "out")])


def _suite_args(p: argparse.ArgumentParser) -> None:
    """The evaluation's suite, the same in every command that reads or makes its queries."""
    p.add_argument("--known", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--edits", default=None)
    p.add_argument("--corpus", type=Path, default=None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="features of the generated scale set (resumable)")
    g.add_argument("--n", type=int, default=1_000_000)
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--workers", type=int, default=1)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--known", type=int, default=200, help="the evaluation's known-set size")
    g.add_argument("--corpus", type=Path, default=None)
    g.set_defaults(fn=cmd_generate)
    v = sub.add_parser("vocab", help="train the frozen vocabulary on scale-set descriptors")
    v.add_argument("--set", type=Path, required=True)
    v.add_argument("--shards", type=int, default=3)
    v.add_argument("--k1", type=int, default=512)
    v.add_argument("--k2", type=int, default=512)
    v.add_argument("--iters", type=int, default=8)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--max-descriptors", type=int, default=0)
    v.add_argument("--fine-seeding", choices=["kmeans++", "random"], default="kmeans++",
                   help="random: seed each fine cell with random members (the coarse "
                   "level keeps k-means++)")
    v.add_argument("--out", type=Path, required=True)
    v.set_defaults(fn=cmd_vocab)
    sb = sub.add_parser("sigbits", help="per-word signature bits for a trained vocabulary")
    sb.add_argument("--set", type=Path, required=True)
    sb.add_argument("--vocab", type=Path, required=True)
    sb.add_argument("--shards", type=int, default=10)
    sb.add_argument("--shrink", type=float, default=20.0)
    sb.add_argument("--max-corr", type=float, default=0.3)
    sb.add_argument("--out", type=Path, required=True)
    sb.set_defaults(fn=cmd_sigbits)
    q = sub.add_parser("queries", help="compute the queries once (resumable per edit)")
    q.add_argument("--out", type=Path, required=True)
    _suite_args(q)
    q.set_defaults(fn=cmd_queries)
    r = sub.add_parser("run", help="the cascade at each list size (under the bench lock)")
    r.add_argument("--set", type=Path, required=True)
    r.add_argument("--queries", type=Path, required=True)
    r.add_argument("--sizes", default="200000,500000,1000000",
                   help="scale images added to the 200 known, ascending; the index grows")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--top", type=int, default=8, help="candidates verified per query")
    r.add_argument("--real", type=int, default=None,
                   help="generated scale images to use (default: all N); the rest of each "
                        "size is recombined from them (keypoint tier only)")
    r.add_argument("--workers", type=int, default=1,
                   help="query processes, forked after the build (each query on one core)")
    r.add_argument("--max-distractors", type=int, default=None,
                   help="only the first distractors (below --all-distractors-from)")
    r.add_argument("--all-distractors-from", type=int, default=None,
                   help="from this size on, every distractor")
    r.add_argument("--scene-every", type=int, default=4,
                   help="every n-th distractor runs the scene check on every nominee")
    r.add_argument("--index-dir", type=Path, default=None,
                   help="where the keypoint index is saved and mapped from (replaced)")
    r.add_argument("--params", default=None, help="KeypointParams as JSON")
    _suite_args(r)
    r.add_argument("--force", action="store_true")
    r.add_argument("--vocab", type=Path, default=None,
                   help="build the indexes with this vocabulary file instead of the "
                   "shipped default (an experiment's)")
    r.add_argument("--hash-views", default="all", choices=["all", "core"],
                   help="core: the hash tier holds only the full and trimmed views")
    r.set_defaults(fn=cmd_run, load_before=os.getloadavg()[0])
    n = sub.add_parser("nominate", help="index-only nomination with synthetic sets (20M)")
    n.add_argument("--set", type=Path, required=True)
    n.add_argument("--queries", type=Path, required=True)
    n.add_argument("--real", type=int, default=1_000_000, help="real scale images")
    n.add_argument("--total", type=int, default=20_000_000, help="keypoint sets in all")
    n.add_argument("--out", type=Path, required=True)
    n.add_argument("--top", type=int, default=8)
    n.add_argument("--params", default=None)
    _suite_args(n)
    n.set_defaults(fn=cmd_nominate)
    ad = sub.add_parser("add", help="add a month (250,000) to a saved index while searching")
    ad.add_argument("--index-dir", type=Path, required=True)
    ad.add_argument("--set", type=Path, required=True)
    ad.add_argument("--queries", type=Path, required=True)
    ad.add_argument("--real", type=int, required=True, help="generated images to recombine")
    ad.add_argument("--n", type=int, default=250_000)
    ad.add_argument("--feature-images", type=int, default=2000,
                    help="corpus photographs (camera-sized ones, cycled) whose features are "
                         "timed on --workers")
    ad.add_argument("--workers", type=int, default=2)
    ad.add_argument("--corpus", type=Path, default=None)
    ad.add_argument("--out", type=Path, required=True)
    ad.set_defaults(fn=cmd_add)
    al = sub.add_parser("all", help="the whole study in --dir (resumable)")
    al.add_argument("--dir", type=Path, required=True)
    al.add_argument("--real", type=int, default=75_000, help="scale images to generate")
    al.add_argument("--sizes", default="200000,500000,1000000")
    al.add_argument("--workers", type=int, default=2)
    al.add_argument("--corpus", type=Path, default=None)
    al.set_defaults(fn=cmd_all)
    rp = sub.add_parser("report", help="markdown tables and fitted laws of --out")
    rp.add_argument("--out", type=Path, required=True)
    rp.set_defaults(fn=cmd_report)
    a = ap.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    raise SystemExit(main())
