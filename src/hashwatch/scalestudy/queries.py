"""The scale study's queries, computed once: every known image of the evaluation under every
edit and every distractor, described as the cascade needs them (hash-tier views; keypoints
and the grey working picture when the hash tier does not find the query's own known image),
saved per edit in a :class:`QueryCache` (resumable). :class:`StudySet` is the corpus side.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashwatch import robust as R
from hashwatch.robust.local import LocalFeatures, mirrored_count, tile_count


def _pack_local(f: LocalFeatures) -> dict[str, np.ndarray]:
    view = f.extra.get("view")
    # the pass counts travel with the features: the search runs the passes as stages
    passes = np.array([mirrored_count(f), tile_count(f)], np.int64)
    return {"xy": f.xy, "desc": f.desc, "angle": f.angle, "octave": f.octave,
            "size": np.array(f.size, np.int32), "passes": passes,
            "view": view if isinstance(view, np.ndarray) else np.zeros((0, 0), np.uint8)}


def _unpack_local(z: dict[str, np.ndarray]) -> LocalFeatures:
    extra: dict[str, object] = {"view": z["view"]}
    if "passes" in z:
        extra["mirrored"], extra["tiles"] = (int(v) for v in z["passes"])
    return LocalFeatures(z["xy"], z["desc"], (int(z["size"][0]), int(z["size"][1])),
                         extra, z["angle"], z["octave"])


@dataclass
class Query:
    """One query: which edit of which known image (or distractor ``-1``), its hash-tier views,
    its collage partners, whether the hash tier found its own known image among the known
    images, and (when not) its keypoints; CPU seconds of its feature extraction."""

    edit: str
    known: int
    partners: list[int]
    views: list  # QueryHash
    hash_own: bool
    local: LocalFeatures | None
    t_views: float
    t_local: float


class QueryCache:
    """Queries saved one file per edit (``<edit>.npz``) and one for the distractors."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "+-._" else "_" for c in name)
        return self.folder / f"{safe}.npz"

    def save(self, name: str, qs: Sequence[Query]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        meta = []
        for i, q in enumerate(qs):
            meta.append({"edit": q.edit, "known": q.known, "partners": q.partners,
                         "variants": [v.variant for v in q.views],
                         "quality": [v.quality for v in q.views], "hash_own": q.hash_own,
                         "t_views": q.t_views, "t_local": q.t_local,
                         "local": q.local is not None})
            arrays[f"c{i}"] = np.frombuffer(b"".join(v.code for v in q.views),
                                            np.uint8).reshape(-1, 32)
            if q.local is not None:
                for k, v in _pack_local(q.local).items():
                    arrays[f"l{i}_{k}"] = np.asarray(v)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        tmp = self.path(name).with_suffix(".tmp.npz")
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, self.path(name))

    def has(self, name: str) -> bool:
        return self.path(name).exists()

    def load(self, name: str) -> list[Query]:
        with np.load(self.path(name)) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            out = []
            for i, m in enumerate(meta):
                codes = z[f"c{i}"]
                views = [R.QueryHash(v, codes[j].tobytes(), int(qq))
                         for j, (v, qq) in enumerate(zip(m["variants"], m["quality"],
                                                         strict=True))]
                loc = None
                if m["local"]:
                    loc = _unpack_local({k: z[f"l{i}_{k}"] for k in
                                         ("xy", "desc", "angle", "octave", "size", "view",
                                          "passes") if f"l{i}_{k}" in z})
                out.append(Query(m["edit"], m["known"], m["partners"], views, m["hash_own"],
                                 loc, m["t_views"], m["t_local"]))
        return out


def describe_query(img: np.ndarray, own: Sequence | None) -> tuple[list, bool, LocalFeatures | None,
                                                                   float, float]:
    """(views, hash tier finds ``own``, keypoints, CPU s views, CPU s keypoints) of one query
    picture; ``own``: its known image's stored views (None for a distractor). Keypoints are
    computed unless the full and trimmed views alone already find ``own`` (so the cache
    serves a hash tier holding every view as well as one holding only those two)."""
    c0 = time.process_time()
    boxes = R.query_regions(img)
    views = R.query_signals(img, boxes=boxes)
    c1 = time.process_time()
    hit = own is not None and R.hash_match(views, own) is not None
    core = [h for h in own or () if h.variant in ("full", "trim")]
    hit_core = bool(core) and R.hash_match(views, core) is not None
    loc = None if hit_core else R.query_local(img, boxes)
    return views, hit, loc, c1 - c0, time.process_time() - c1


@dataclass
class StudySet:
    """The corpus side of the study: known images (pixels and stored views), fillers,
    distractor paths, edits (in the evaluation's order)."""

    known: list[Path]
    distractors: list[Path]
    kpix: list[np.ndarray]
    fpix: list[np.ndarray]
    known_views: list[list]
    known_local: list[LocalFeatures]
    edits: list[str]
    seed: int
    sources: list[Path] = field(default_factory=list)  # the scale set's source photographs


def load_study_set(corpus: Path, n_known: int = 200, seed: int = 0,
                   edits: Sequence[str] | None = None) -> StudySet:
    from hashwatch.edits import edit_names
    from hashwatch.evaluate import corpus_files, load_pixels, split_fillers, split_known
    from hashwatch.scaleset import study_split

    files = corpus_files(corpus)
    known, distractors, _sources = study_split(files, n_known, seed)
    _, rest = split_known(files, n_known, seed)
    fillers, _ = split_fillers(rest, seed)
    kpix = [load_pixels(p) for p in known]
    fpix = [load_pixels(p) for p in fillers]
    return StudySet(known, distractors, kpix, fpix, [R.known_signals(p) for p in kpix],
                    [R.known_local(p) for p in kpix], list(edits or edit_names()), seed,
                    list(_sources))


def build_queries(ss: StudySet, cache: QueryCache,
                  say: Callable[[str], None] = lambda s: None) -> None:
    """Compute and save every query not yet in ``cache`` (resumable per edit)."""
    from hashwatch.edits import edit_names
    from hashwatch.evaluate import load_pixels, make_query

    order = {e: i for i, e in enumerate(edit_names())}
    for en in ss.edits:
        if cache.has(en):
            continue
        qs = []
        for ki in range(len(ss.kpix)):
            img, pidx = make_query(en, order[en], ki, ss.kpix, ss.fpix, ss.seed)
            views, hit, loc, tv, tl = describe_query(img, ss.known_views[ki])
            qs.append(Query(en, ki, pidx, views, hit, loc, tv, tl))
        cache.save(en, qs)
        say(f"queries: {en} ({sum(not q.hash_own for q in qs)} for the keypoint tier)")
    if not cache.has("distractors"):
        qs = []
        for p in ss.distractors:
            views, _, loc, tv, tl = describe_query(load_pixels(p), None)
            qs.append(Query("distractor", -1, [], views, False, loc, tv, tl))
        cache.save("distractors", qs)
        say(f"queries: {len(qs)} distractors")
