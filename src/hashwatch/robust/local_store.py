"""Exact keypoint store: every known image's ORB descriptors searched by exact k-NN."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from hashwatch.robust.local import LOCAL_KNN, LOCAL_MATCH_RADIUS, LocalFeatures
from hashwatch.robust.routes import KnownHash
from hashwatch.robust.verify import LocalVerdict, search_in_stages, verify


class LocalStore:
    """Local features of many known images, searched the way the evaluation measured it: each
    query descriptor's nearest stored descriptor (over all known images, within
    LOCAL_MATCH_RADIUS) votes for its image; one query keypoint per stored keypoint; the
    ``top`` images with at least ``min_votes`` votes get the geometric check.

    Exact nearest-neighbour search (faiss IndexBinaryFlat when installed, numpy otherwise): fine
    for the evaluation and lists up to ~10^5 images; a 20M list needs an approximate binary
    index (IVF / bag of words) in its place.
    """

    def __init__(self) -> None:
        self._feats: list[LocalFeatures] = []
        self._ids: list[int] = []
        self._descs: list[np.ndarray] = []
        self._owner: list[np.ndarray] = []
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray, object] | None = None

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, known_id: int, feats: LocalFeatures) -> None:
        if len(feats.desc) == 0:
            return
        slot = len(self._feats)
        self._feats.append(feats)
        self._ids.append(int(known_id))
        self._descs.append(feats.desc)
        self._owner.append(np.full(len(feats.desc), slot, np.int64))
        self._cache = None

    def _table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
        if self._cache is None:
            descs = np.ascontiguousarray(np.concatenate(self._descs))
            owner = np.concatenate(self._owner)
            row = np.concatenate([np.arange(len(d)) for d in self._descs])
            index = None
            try:
                import faiss

                index = faiss.IndexBinaryFlat(256)
                index.add(descs)
            except ImportError:  # pragma: no cover - numpy fallback below
                index = None
            self._cache = (descs, owner, row, index)
        return self._cache

    def _nearest(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(q, k) distances and stored-row indices of each query descriptor's k nearest."""
        descs, _, _, index = self._table()
        k = min(k, len(descs))
        if index is not None:
            dist, idx = index.search(np.ascontiguousarray(q), k)
            return dist.astype(np.int64), idx.astype(np.int64)
        qb = np.unpackbits(q, axis=1).astype(np.float32) * 2 - 1
        ds, js = [], []
        for a in range(0, len(descs), 65536):  # chunks keep the distance matrix small
            kb = np.unpackbits(descs[a:a + 65536], axis=1).astype(np.float32) * 2 - 1
            d = np.rint((256 - qb @ kb.T) / 2).astype(np.int64)
            j = np.argsort(d, axis=1, kind="stable")[:, :k]
            ds.append(np.take_along_axis(d, j, axis=1))
            js.append(j + a)
        d, j = np.concatenate(ds, axis=1), np.concatenate(js, axis=1)
        o = np.argsort(d, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(d, o, axis=1), np.take_along_axis(j, o, axis=1)

    def inliers(self, q: LocalFeatures, known_hashes: Callable[[int], Sequence[KnownHash]],
                *, top: int = 3, min_votes: int = 8, scene_all: bool = False,
                small: bool = True) -> dict[int, LocalVerdict]:
        """known id -> verdict for the candidates put to the geometric check. The scene check
        runs for candidates that pass geometry (with ``scene_all``: for every candidate with a
        transform, which the evaluation uses to measure the check on non-matches);
        ``known_hashes(known_id)`` gives the stored PDQ views it compares against.

        Up to three stages, each a search of its own (its candidates get their own ``top``),
        each run only when the ones before matched nothing, the better verdict kept per known
        image: the query's plain pass (whole picture and regions: the search as it was), its
        mirrored pass, and (with ``small``) the small-picture pass (grid cells, pictures in a
        bigger frame; computed from the query's view unless the query carries it) and its
        mirrored twin; see
        :func:`hashwatch.robust.verify.search_in_stages`."""
        return search_in_stages(
            q, lambda f, t: self._stage(f, known_hashes, t or top, min_votes, scene_all),
            small=small, top=top)

    def _stage(self, q: LocalFeatures, known_hashes: Callable[[int], Sequence[KnownHash]],
               top: int, min_votes: int, scene_all: bool) -> dict[int, LocalVerdict]:
        if not self._ids or len(q.desc) == 0:
            return {}
        _, owner, row, _ = self._table()
        # k nearest, not 1: with many known pictures a true partner is often not the single
        # nearest stored descriptor (ORB descriptors are short and repetitive).
        dist, idx = self._nearest(q.desc, LOCAL_KNN)
        qi = np.repeat(np.arange(len(q.desc)), dist.shape[1])
        dist, idx = dist.ravel(), idx.ravel()
        good = dist <= LOCAL_MATCH_RADIUS
        if not good.any():
            return {}
        qi, dist, idx = qi[good], dist[good], idx[good]
        # Per known picture: one correspondence per query keypoint and one per stored keypoint
        # (the closest), so overlapping query passes (whole picture, regions) and the k-NN do
        # not count the same point twice.
        order = np.argsort(dist, kind="stable")
        qi, idx = qi[order], idx[order]
        own = owner[idx]
        _, f1 = np.unique(idx, return_index=True)
        keep = np.zeros(len(idx), bool)
        keep[f1] = True
        qkey = own * (len(q.desc) + 1) + qi
        _, f2 = np.unique(qkey, return_index=True)
        keep2 = np.zeros(len(idx), bool)
        keep2[f2] = True
        sel_all = keep & keep2
        qi, kidx, owners = qi[sel_all], idx[sel_all], own[sel_all]
        votes = np.bincount(owners, minlength=len(self._ids))
        out: dict[int, LocalVerdict] = {}
        for slot in np.argsort(-votes, kind="stable")[:top]:
            if votes[slot] < min_votes:
                break
            sel = owners == slot
            pairs = np.stack([qi[sel], row[kidx[sel]]], axis=1)
            kid, kf = self._ids[int(slot)], self._feats[int(slot)]
            out[kid] = verify(q, kf, lambda kid=kid: known_hashes(kid), pairs=pairs,
                              scene_all=scene_all)
        return out
