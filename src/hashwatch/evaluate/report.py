"""The summary of an evaluation (recall per method and edit, false matches, rates per pair) and its
report: markdown, distance plots, the files written."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashwatch import robust as R
from hashwatch.edits import COMBINED_EDITS, EDITS
from hashwatch.evaluate.rates import (
    local_tail_rate,
    share_tail_rate,
    tail_rate,
)
from hashwatch.evaluate.run import (
    BIG,
    ROUTES,
    EvalResult,
    _score,
    _thr,
    method_routes,
)


@dataclass
class Summary:
    methods: list[str]
    per_edit: dict[str, dict[str, float]]  # method -> edit -> recall
    false_distractor: dict[str, int]
    false_wrong_known: dict[str, int]
    est_rate: dict[str, float]
    mean_recall: dict[str, float]
    route_fits: dict[str, tuple[int, float, float, float]]
    local_fit: tuple[float, float]
    n_pairs: int
    # scene check on chance alignments: (P(pdq <= max), P(redetect >= min), candidates measured,
    # false matches the geometric check alone would have let through)
    scene_fit: tuple[float, float, int, int] | None = None
    # method -> how many of its routes had too few distractor pairs for a tail fit (their
    # rate is left out of ``est_rate``, which is then a lower bound)
    unfitted: dict[str, int] = field(default_factory=dict)


def summarise(res: EvalResult) -> Summary:
    methods = method_routes()
    names = [n for n, _ in methods]
    per_edit: dict[str, dict[str, float]] = {}
    fd: dict[str, int] = {}
    fw: dict[str, int] = {}
    est: dict[str, float] = {}
    unfitted: dict[str, int] = {}
    fits: dict[str, tuple[int, float, float, float]] = {}
    n_pairs = res.distractor_d.shape[0] * res.distractor_d.shape[1]
    for r, route in enumerate(ROUTES):
        rate, mu, sg = tail_rate(res.distractor_d[..., r].ravel(), _thr(route))
        fits[f"{route[0]}-{route[1]}"] = (_thr(route), rate, mu, sg)
    for name, cols in methods:
        ts = _score(res.true_d, cols)  # (ne, nk)
        per_edit[name] = {e: float((ts[i] <= 0).mean()) for i, e in enumerate(res.edits)}
        fd[name] = int((_score(res.distractor_d, cols) <= 0).sum())
        fw[name] = int((res.wrong_score[name] <= 0).sum())
        rates = [fits[f"{ROUTES[c][0]}-{ROUTES[c][1]}"][1] for c in cols]
        # a route present for too few pairs to fit adds nothing known: the sum of the fitted
        # ones is kept and the method is marked as a lower bound (``unfitted``)
        est[name] = float(np.nansum(rates))
        unfitted[name] = sum(math.isnan(r) for r in rates)
    geo = res.geometric_local
    lfit = local_tail_rate(geo.ravel(), n_pairs, R.LOCAL_MIN_INLIERS)
    scene_fit = None
    if res.config.local and res.distractor_scene is not None and len(res.distractor_scene):
        sc = res.distractor_scene
        pdq = np.minimum(sc[:, 0], BIG).astype(np.int16)
        p_pdq = tail_rate(pdq, R.SCENE_PDQ_MAX)[0] if len(pdq) >= 1000 else float("nan")
        p_rd = share_tail_rate(sc[:, 1], R.SCENE_REDETECT_MIN)
        hash_miss = _score(res.distractor_d, methods[-1][1]) > 0
        geo_false = int((hash_miss & (geo >= R.LOCAL_MIN_INLIERS)).sum())
        scene_fit = (p_pdq, p_rd, len(sc), geo_false)
    if res.config.local:
        full_cols = methods[-1][1]
        name = "+local"
        names.append(name)
        ts = _score(res.true_d, full_cols)
        ok = (ts <= 0) | (res.true_local >= R.LOCAL_MIN_INLIERS)
        per_edit[name] = {e: float(ok[i].mean()) for i, e in enumerate(res.edits)}
        fd[name] = fd[methods[-1][0]] + int(
            ((_score(res.distractor_d, full_cols) > 0)
             & (res.distractor_local >= R.LOCAL_MIN_INLIERS)).sum())
        fw[name] = int(((res.wrong_score[methods[-1][0]] <= 0)
                        | (res.wrong_local >= R.LOCAL_MIN_INLIERS)).sum())
        # a chance alignment must pass both checks: P(geometry) x P(scene check | candidate)
        p_scene = 1.0 if scene_fit is None else min(1.0, np.nansum(scene_fit[:2]))
        est[name] = est[methods[-1][0]] + lfit[0] * p_scene
        unfitted[name] = unfitted[methods[-1][0]] + int(math.isnan(lfit[0]))
    if res.partner_found is not None:
        # partner mode: the CSV export in a fresh database, matched by the Matcher (hash tier)
        names.append("partner")
        per_edit["partner"] = {e: float(res.partner_found[i].mean())
                               for i, e in enumerate(res.edits)}
        fd["partner"] = int(res.partner_distractor)
        fw["partner"] = int(res.partner_wrong.sum())
        est["partner"] = est[methods[-1][0]]  # the same routes as the robust hash tier
        unfitted["partner"] = unfitted[methods[-1][0]]
    mean = {m: float(np.mean(list(per_edit[m].values()))) for m in names}
    return Summary(names, per_edit, fd, fw, est, mean, fits, lfit, n_pairs, scene_fit,
                   unfitted)


def _rate_cell(rate: float, unfitted: int) -> str:
    if math.isnan(rate) or (unfitted and rate == 0):
        return "n/a"
    return f">= {rate:.1e}" if unfitted else f"{rate:.1e}"


def markdown(res: EvalResult, s: Summary) -> str:
    nk, nd = len(res.known), len(res.distractors)
    lines = [
        f"Known images: {nk}; fillers (combined edits only): {len(res.fillers)}; "
        f"distractors: {nd}; distractor x known pairs: {s.n_pairs:,}; "
        f"edits: {len(res.edits)}; queries: {len(res.edits) * nk:,}; seed {res.config.seed}.",
        "",
        "| edit | family | " + " | ".join(s.methods) + " |",
        "|---|---|" + "---:|" * len(s.methods),
    ]
    for e in res.edits:
        cells = [f"{100 * s.per_edit[m][e]:.1f}" for m in s.methods]
        lines.append(f"| {e} | {EDITS[e].family} | " + " | ".join(cells) + " |")
    lines.append("| **mean recall %** | | " + " | ".join(
        f"**{100 * s.mean_recall[m]:.1f}**" for m in s.methods) + " |")
    combined = [e for e in res.edits if e in COMBINED_EDITS]
    single = [e for e in res.edits if e not in COMBINED_EDITS]
    if combined and single:
        for label, group in (("single edits", single), ("edits in combination", combined)):
            lines.append(f"| mean recall %, {label} ({len(group)}) | | " + " | ".join(
                f"{100 * np.mean([s.per_edit[m][e] for e in group]):.1f}"
                for m in s.methods) + " |")
    lines.append("| false matches, distractor x known | | " + " | ".join(
        str(s.false_distractor[m]) for m in s.methods) + " |")
    lines.append("| false matches, edited query -> wrong known | | " + " | ".join(
        str(s.false_wrong_known[m]) for m in s.methods) + " |")
    lines.append("| est. false-match rate per pair | | " + " | ".join(
        _rate_cell(s.est_rate[m], s.unfitted.get(m, 0)) for m in s.methods) + " |")
    if any(s.unfitted.values()):
        lines += ["", "(>= : the sum of the routes that could be fitted; routes marked n/a below "
                  "existed for fewer than 1,000 distractor x known pairs, too few for a tail "
                  "fit, and are left out. Run with more known images or distractors to fit "
                  "them.)"]
    lines += ["", "Per-route tail fits (distractor x known, per-pair min distance over the "
              "route's variant pairs):", "",
              "| route (query-known) | threshold | est. P(d <= t) | fitted mu | fitted sigma | "
              "empirical min |", "|---|---:|---:|---:|---:|---:|"]
    for r, route in enumerate(ROUTES):
        t, rate, mu, sg = s.route_fits[f"{route[0]}-{route[1]}"]
        mn = int(res.distractor_d[..., r].min()) if res.distractor_d.size else BIG
        present = int((res.distractor_d[..., r] < BIG).sum())
        cell = f"n/a ({present:,} pairs)" if math.isnan(rate) else f"{rate:.1e}"
        mu_s, sg_s = ("-" if math.isnan(x) else f"{x:.1f}" for x in (mu, sg))
        lines.append(f"| {route[0]}-{route[1]} | {t} | {cell} | {mu_s} | {sg_s} | "
                     f"{mn if mn < BIG else '-'} |")
    if res.config.local:
        geo = res.geometric_local
        lines += ["", f"Local tier: distractor pairs that reached the geometric check: "
                  f"{int((geo > 0).sum()):,}; max inliers seen "
                  f"{int(geo.max())}; geometric tail fit P(inliers >= "
                  f"{R.LOCAL_MIN_INLIERS}) = {_rate_cell(s.local_fit[0], 0)} per pair (decay "
                  f"{'n/a' if math.isnan(s.local_fit[1]) else f'{s.local_fit[1]:.2f}'} per "
                  "inlier; n/a: too few chance alignments to fit a slope, the rate is then "
                  "the rule-of-three bound)."]
        if s.scene_fit is not None:
            p_pdq, p_rd, n_sc, geo_false = s.scene_fit
            lines += ["", f"Scene check on {n_sc:,} distractor candidates that got a transform: "
                      f"P(aligned PDQ <= {R.SCENE_PDQ_MAX}) = {_rate_cell(p_pdq, 0)} (normal tail "
                      f"fit, n/a under 1,000 candidates), "
                      f"P(re-detected share >= {R.SCENE_REDETECT_MIN} with >= "
                      f"{R.SCENE_REFOUND_MIN} keypoints) = {_rate_cell(p_rd, 0)} (exponential "
                      f"tail fit, or 3/n when too thin to fit), highest such share seen "
                      f"{res.distractor_scene[:, 1].max():.3f}, lowest aligned PDQ "
                      f"{int(res.distractor_scene[:, 0].min())}; the geometric check alone "
                      f"would have made {geo_false} false match(es) at >= "
                      f"{R.LOCAL_MIN_INLIERS} inliers."]
    if res.partner_found is not None:
        lines += ["", f"Partner mode (column `partner`): the known set added to a custodian "
                  f"database, exported to CSV "
                  f"({res.timings.get('partner_csv_bytes_per_known', 0):.0f} bytes per known "
                  f"image), imported into a fresh database and matched by the Matcher there "
                  f"(hash tier, every exported view, no keypoints); its false-match row "
                  f"counts distractor queries that matched anything."]
    kh = res.n_known_hashes
    lines += ["", f"Hashes stored per known image: mean {kh.mean():.2f} (1 interchange PDQ + "
              f"{kh.mean() - 1:.2f} extra); query hashes per image: mean "
              f"{np.mean(res.n_query_hashes):.1f}; local features per known image: mean "
              f"{np.mean(res.local_bytes) if res.local_bytes else 0:.0f} bytes.",
              f"Time: known image {1000 * res.timings['known_s_per_image']:.1f} ms, "
              f"edited query {1000 * res.timings['query_s_per_image']:.1f} ms (cascade: local "
              f"tier run for {100 * res.timings.get('local_fraction', 0):.0f}% of them), "
              f"unmatched query (all routes + local tier) "
              f"{1000 * res.timings.get('distractor_s_per_image', 0):.1f} ms; against {nk} "
              f"known, 1 core, decode excluded."]
    return "\n".join(lines)


def plot(res: EvalResult, s: Summary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = method_routes()
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    bins = np.arange(-40, 140, 2)
    for ax, (name, cols) in zip(axes[:2], (methods[0], methods[-1]), strict=True):
        ts = _score(res.true_d, cols).ravel()
        ds = _score(res.distractor_d, cols).ravel()
        ax.hist(np.clip(ts, -40, 138), bins=bins, alpha=0.6, density=True,
                label="edited copy vs its known")
        ax.hist(np.clip(ds, -40, 138), bins=bins, alpha=0.6, density=True,
                label="distractor x known")
        ax.axvline(0.5, color="k", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_title(f"{name}: best (distance - route threshold)")
        ax.set_xlabel("distance - threshold (match at <= 0)")
        ax.legend(fontsize=8)
    ax = axes[2]
    order = list(range(len(res.edits)))
    x = np.arange(len(order))
    for m in (s.methods[0], s.methods[1], s.methods[-2], s.methods[-1]):
        ax.plot(x, [100 * s.per_edit[m][res.edits[i]] for i in order], marker=".", lw=1,
                label=m)
    ax.set_xticks(x, [res.edits[i] for i in order], rotation=90, fontsize=6)
    ax.set_ylabel("recall %")
    ax.set_title("recall per edit")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(res: EvalResult, out: Path) -> tuple[Summary, str]:
    """Write robustness.md (the table), robustness.png (distributions) and robustness.npz (raw
    distances) into ``out``; returns the summary and the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    s = summarise(res)
    md = markdown(res, s)
    (out / "robustness.md").write_text(md + "\n")
    plot(res, s, out / "robustness.png")
    np.savez_compressed(out / "robustness.npz", true_d=res.true_d, true_local=res.true_local,
                        wrong_local=res.wrong_local, distractor_d=res.distractor_d,
                        distractor_local=res.distractor_local, edits=np.array(res.edits),
                        routes=np.array([f"{a}-{b}" for a, b in ROUTES]),
                        **{f"wrong_{k}": v for k, v in res.wrong_score.items()})
    return s, md
