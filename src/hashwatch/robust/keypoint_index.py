"""The keypoint tier's index for lists of tens of millions of known images.

Two stages, as in large-scale image retrieval:

1. **Nomination, in memory.** An inverted file over a frozen binary visual vocabulary
   (:mod:`hashwatch.robust.vocab`; Sivic and Zisserman, "Video Google: a text retrieval
   approach to object matching in videos", ICCV 2003): each known keypoint set contributes its
   :data:`KeypointParams.n_index` strongest, spread keypoints, one posting each in the list of
   its word: the set's slot (uint32) and a 16-bit Hamming-embedding signature (Jégou, Douze,
   Schmid, "Hamming embedding and weak geometric consistency for large scale image search",
   ECCV 2008; bits chosen per word, :mod:`hashwatch.robust.vocab`), 6 bytes. A query
   descriptor takes its ``m`` nearest words (multiple assignment); a posting votes for its
   slot when the signatures are within ``ht`` bits, one vote per (query descriptor, slot),
   weighted by the word's inverse document frequency (tf-idf, Sivic and Zisserman).
   The best-voted slots are the candidates; when fewer images than asked get a vote (a small
   list), the free places go to images voted for within a looser radius, ranked by their
   descriptor pairs with the query (:meth:`KeypointIndex.search`).
2. **Verification, on disk.** Every keypoint set's ``n_verify`` strongest, spread keypoints
   are kept in an append-only file of records (:func:`encode_verify`: positions in 3 bytes,
   descriptors cut to their first ``desc_bytes`` bytes, i.e. ORB's first tests) that is
   memory-mapped and read only for the candidates; the caller re-matches them pairwise on the
   kept tests and checks geometry and the scene (:mod:`hashwatch.robust.geometry`,
   :mod:`hashwatch.robust.scene`).

A known image may hold several keypoint sets (e.g. of a mirrored or otherwise transformed copy):
each set is a slot; candidates are reported per image (its best slot).

Incremental like :class:`hashwatch.index.HammingIndex`: additions go to a small fresh segment
that is sealed into an immutable one (a CSR layout: word offsets, signatures, slots) when it
grows; sealed segments are merged tier by tier so their number stays logarithmic; removals are
tombstones. Persisted as a folder of raw arrays (see :meth:`KeypointIndex.save`) that processes
map read-only and so share (``load(..., mmap=True)``).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from hashwatch.robust.kprecord import (
    FORMAT,
    decode_verify,
    encode_verify,
)
from hashwatch.robust.kpsegment import (
    _Grow,
    _Segment,
    _write_array,
)
from hashwatch.robust.local import LocalFeatures
from hashwatch.robust.vocab import Vocabulary, shipped_vocabulary


@dataclass(frozen=True)
class KeypointParams:
    """Tuning of the index (chosen by measurement, see BENCHMARKS.md, "Scale study").

    ``n_index`` keypoints per set are indexed (the strongest, spread), ``n_verify`` are kept
    for verification with the first ``desc_bytes`` bytes of their descriptors
    (:func:`encode_verify`); a query descriptor takes ``m`` words among the fine words of its
    ``coarse_probe`` nearest coarse cells; a posting counts when its signature is within ``ht``
    bits (3 of 16 with either signature scheme: the per-word bits keep more of the own
    images among the nominees at 3 than v1's did, BENCHMARKS "Signature bits per word");
    ``ht_fill``: the looser radius that fills a search's free places when fewer than its
    ``top`` images get a vote within ``ht`` (small lists, :meth:`KeypointIndex.search`); words
    whose lists exceed ``max_df_share`` of all slots (and 100) carry no vote (stop words;
    0.2% scans ~30% fewer postings than 2% at 10^6 sets and keeps the single edits' recall
    but costs the combined edits ~1 point, BENCHMARKS "Nomination cost at 10^6");
    ``seal_slots``: the fresh segment is sealed at this many slots; a search of at most
    ``few`` descriptors (the plain pass of one picture) takes ``m_few`` words per descriptor
    instead of ``m``: with 2^20 words a 4th word brings back true pairs the finer words split
    (stretched, keystoned copies), and such a search is cheap, while the searches of many
    descriptors (regions, small-picture passes), most of the p99 at 2*10^7, keep ``m``
    (BENCHMARKS.md, "A 4th word for the few-descriptor searches").

    ``m``, ``m_few``, ``few``, ``coarse_probe``, ``ht``, ``ht_fill`` and ``max_df_share`` act
    at query time only (:data:`QUERY_SIDE`): a saved index is searched with the current
    defaults of those."""

    n_index: int = 64
    n_verify: int = 128
    desc_bytes: int = 24  # 128 x (3 + 24) + 12 = 3,468 B a record (BENCHMARKS, issue 10)
    m: int = 3
    m_few: int = 4
    few: int = 400  # the plain (or mirrored) pass of a picture without regions
    coarse_probe: int = 2
    ht: int = 3
    ht_fill: int = 6
    max_df_share: float = 0.02
    seal_slots: int = 50_000


#: The fill of a small list's search (:meth:`KeypointIndex.search`) ranks up to FILL_POOL x
#: ``top`` images by their descriptor pairs, each a record read and a pairwise match (2 found
#: as many own images as 4 on the 13 edits that vocabulary v2 moved at 60 known, for half).
FILL_POOL = 2

#: The :class:`KeypointParams` fields that do not shape the saved postings (query side).
QUERY_SIDE = ("m", "m_few", "few", "coarse_probe", "ht", "ht_fill", "max_df_share")


@dataclass(frozen=True)
class Candidate:
    """A nominated known image: its id, best slot and that slot's vote."""

    image_id: int
    slot: int
    score: float


# -- spread selection of indexed keypoints --------------------------------------------------


def spread_order(xy: np.ndarray, size: tuple[int, int], grid: int = 4) -> np.ndarray:
    """Order of keypoints (given strongest first) that takes them cell by cell: round r takes
    each grid cell's r-th strongest, so any prefix is spread over the picture as
    :func:`hashwatch.robust.local._spread` spreads the stored set."""
    n = len(xy)
    if n == 0:
        return np.zeros(0, np.int64)
    w, h = max(1, size[0]), max(1, size[1])
    cx = np.minimum(grid - 1, (xy[:, 0] * grid / w).astype(np.int64))
    cy = np.minimum(grid - 1, (xy[:, 1] * grid / h).astype(np.int64))
    cell = cx * grid + cy
    # rank of each keypoint within its cell, in the given (strongest-first) order
    order = np.argsort(cell, kind="stable")
    sc = cell[order]
    start = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]])
    runs = np.diff(np.r_[start, n])
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - np.repeat(start, runs)
    return np.lexsort((np.arange(n), rank))


def subset(f: LocalFeatures, n: int) -> LocalFeatures:
    """The ``n`` keypoints of a stored set (strongest first) kept when fewer are wanted:
    spread over the picture (:func:`spread_order`), in their original order."""
    if len(f.desc) <= n:
        return f
    keep = np.sort(spread_order(f.xy, f.size)[:n])
    return LocalFeatures(f.xy[keep], f.desc[keep], f.size, dict(f.extra),
                         None if f.angle is None else f.angle[keep],
                         None if f.octave is None else f.octave[keep])


class KeypointIndex:
    """Keypoint sets of known images: nomination in memory, verification data on disk.

    ``add(image_id, features)`` (one :class:`LocalFeatures` or several for one image; each set
    keeps at most ``n_verify`` keypoints for verification and indexes ``n_index``);
    ``remove(image_ids)``; ``search(query) -> [Candidate]``; ``features(slot)`` reads a
    candidate's set back; ``save(folder)`` / ``KeypointIndex.load(folder, mmap=True)``.
    Thread safety: one writer (add, remove, save) alongside any number of searches.
    """

    def __init__(self, vocab: Vocabulary, params: KeypointParams | None = None) -> None:
        self.vocab = vocab
        self.params = params or KeypointParams()
        self._lock = threading.RLock()
        self._segments: list[_Segment] = []
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_lo = 0
        self._fresh: _Segment | None = None
        self._df = np.zeros(vocab.n_words, np.int64)
        self._slots = _Grow(np.int64)  # slot -> known image id
        self._dead = _Grow(np.bool_)  # slot -> tombstoned
        self._n_slots = 0
        self._n_live = 0
        self._n_images: int | None = 0  # distinct live images (None: count again)
        # verification store: sealed part (maybe mapped) + records appended since
        self._vbuf: np.ndarray | memoryview = np.zeros(0, np.uint8)
        self._voff = np.zeros(1, np.uint64)
        self._vnew: list[bytes] = []
        self._path: Path | None = None
        self.meta: dict[str, object] = {}  # caller's data saved with the index
        # format of the records loaded from disk (1: before issue 10's disk target; records
        # added here are always FORMAT, and decode_verify reads either)
        self.record_format = FORMAT
        self._gen = 0  # manifest generation this process last loaded or saved

    # -- sizes ------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Known images with at least one live keypoint set."""
        with self._lock:
            if self._n_images is None:
                live = self._slots.view[~self._dead.view]
                self._n_images = int(len(np.unique(live)))
            return self._n_images

    @property
    def n_slots(self) -> int:
        return self._n_slots

    @property
    def live_slots(self) -> int:
        """Keypoint sets not removed."""
        return self._n_live

    def holds(self, image_id: int) -> bool:
        """Whether the image has a live keypoint set (a scan of the slot table)."""
        with self._lock:
            hit = self._slots.view == int(image_id)
            return bool((hit & ~self._dead.view).any())

    def live_image_ids(self) -> np.ndarray:
        """Ids of the images with a live keypoint set, ascending (int64)."""
        with self._lock:
            return np.unique(self._slots.view[~self._dead.view])

    def stats(self) -> dict[str, int]:
        """Postings, slots and bytes of the in-memory (nomination) and on-disk (verification)
        parts: ``verify_bytes`` the records
        (:func:`hashwatch.robust.kprecord.verify_record_bytes` each),
        ``verify_offset_bytes`` their uint64 offsets, ``disk_bytes`` what the saved folder
        holds for them and the postings (issue 10's "bytes per known image on disk" is
        ``disk_bytes`` / ``slots``; the vocabulary and the word offsets are a fixed cost)."""
        post = sum(s.n for s in self._segments) + sum(len(p[0]) for p in self._pending)
        offs = sum(s.offsets.nbytes for s in self._segments)
        verify = int(self._voff[-1]) + sum(len(b) for b in self._vnew)
        voffs = 8 * (self._n_slots + 1)
        return {
            "images": len(self), "slots": self._n_slots, "postings": post,
            "posting_bytes": post * 6, "offset_bytes": offs,
            "slot_bytes": self._n_slots * (8 + 1), "live_slots": self._n_live,
            "verify_bytes": verify, "verify_offset_bytes": voffs,
            "disk_bytes": verify + voffs + post * 6,
            "segments": len(self._segments) + bool(self._pending),
        }

    # -- writing ----------------------------------------------------------------------------
    def add(self, image_id: int, features: LocalFeatures | Sequence[LocalFeatures]) -> int:
        """Add one known image's keypoint set(s); returns the slots added (sets with no
        keypoint are skipped)."""
        sets = [features] if isinstance(features, LocalFeatures) else list(features)
        return self.add_many([(image_id, s) for s in sets])

    def add_many(self, items: Iterable[tuple[int, LocalFeatures]]) -> int:
        """Add (image id, keypoint set) pairs; several pairs may share an image id."""
        p = self.params
        recs: list[bytes] = []
        img: list[int] = []
        descs: list[np.ndarray] = []
        owner: list[np.ndarray] = []
        with self._lock:
            slot = self._n_slots
            for image_id, f in items:
                if len(f.desc) == 0:
                    continue
                v = subset(f, p.n_verify)
                ix = subset(v, p.n_index)
                recs.append(encode_verify(v, p.desc_bytes))
                img.append(int(image_id))
                descs.append(ix.desc)
                owner.append(np.full(len(ix.desc), slot, np.uint32))
                slot += 1
            if not recs:
                return 0
            d = np.concatenate(descs)
            words, _ = self.vocab.assign(d, 1)
            words = words[:, 0]
            sigs = self.vocab.signatures(d, words)
            ids = np.concatenate(owner)
            self._pending.append((words, sigs, ids))
            self._df += np.bincount(words, minlength=self.vocab.n_words)
            self._slots.append(np.array(img, np.int64))
            self._dead.append(np.zeros(len(img), bool))
            self._vnew += recs
            self._n_slots = slot
            self._n_live += len(recs)
            self._n_images = None
            self._fresh = None
            if self._n_slots - self._pending_lo >= p.seal_slots:
                self._seal()
            return len(recs)

    def remove(self, image_ids: Iterable[int]) -> int:
        """Tombstone every keypoint set of these images; returns the sets removed."""
        ids = np.fromiter((int(i) for i in image_ids), np.int64)
        if not len(ids):
            return 0
        with self._lock:
            hit = np.flatnonzero(np.isin(self._slots.view, ids) & ~self._dead.view)
            self._dead.view[hit] = True
            self._n_live -= len(hit)
            self._n_images = None
        return int(len(hit))

    def _seal(self) -> None:
        if not self._pending:
            return
        w = np.concatenate([x[0] for x in self._pending])
        s = np.concatenate([x[1] for x in self._pending])
        i = np.concatenate([x[2] for x in self._pending])
        seg = _Segment.build(self.vocab.n_words, w, s, i, self._pending_lo, self._n_slots)
        self._segments.append(seg)
        self._pending = []
        self._pending_lo = self._n_slots
        self._fresh = None
        self._compact()

    def _compact(self, fan: int = 4) -> None:
        """Tiered merge: while ``fan`` segments of about the same size (within 4x of the
        smallest) exist, merge them; keeps the segment count logarithmic in the size."""
        while True:
            segs = sorted(self._segments, key=lambda s: s.n)
            group = [x for x in segs if x.n <= 4 * max(1, segs[0].n)][:fan] if segs else []
            if len(group) < fan:
                return
            merged = _Segment.merge(group)
            self._segments = [x for x in self._segments if x not in group] + [merged]
            self._segments.sort(key=lambda s: s.slot_lo)

    # -- reading ----------------------------------------------------------------------------
    def image_of(self, slot: int) -> int:
        return int(self._slots.view[slot])

    def features(self, slot: int) -> LocalFeatures:
        """The verification keypoints of one slot (read from the mapped file when saved)."""
        n_old = len(self._voff) - 1
        if slot < n_old:
            a, b = int(self._voff[slot]), int(self._voff[slot + 1])
            return decode_verify(memoryview(self._vbuf)[a:b])
        return decode_verify(self._vnew[slot - n_old])

    def _segments_now(self) -> list[_Segment]:
        with self._lock:
            if self._pending and self._fresh is None:
                w = np.concatenate([x[0] for x in self._pending])
                s = np.concatenate([x[1] for x in self._pending])
                i = np.concatenate([x[2] for x in self._pending])
                self._fresh = _Segment.build(self.vocab.n_words, w, s, i, self._pending_lo,
                                             self._n_slots)
            return self._segments + ([self._fresh] if self._pending else [])

    def query_words(self, q: LocalFeatures) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(words (nq, m) int64, signatures uint16, weights (nq, m) float32) of a query: the
        signatures (nq,) under the vocabulary's ``"global"`` scheme, (nq, m) (one per assigned
        word) under ``"word"``; idf weights, 0 for stop words and missing words."""
        p = self.params
        words, _ = self.vocab.assign(q.desc, self.words_per_descriptor(len(q.desc)),
                                     coarse_probe=p.coarse_probe)
        if self.vocab.sig_scheme == "global":
            sigs = self.vocab.signatures(q.desc)
        else:
            sigs = self.vocab.signatures(q.desc, words)
        return words, sigs, self.word_weights(words)

    def words_per_descriptor(self, n: int) -> int:
        """Words each descriptor of a search of ``n`` descriptors is assigned to: ``m_few``
        for at most ``few`` descriptors, else ``m`` (:class:`KeypointParams`)."""
        p = self.params
        return p.m_few if n <= p.few else p.m

    def word_weights(self, words: np.ndarray) -> np.ndarray:
        """Vote weight (float32, the shape of ``words``) of assigned words: the inverse
        document frequency log((N + 1) / (df + 1)) over the N slots, 0 for missing words
        (-1), words no set holds and stop words (lists longer than ``max_df_share`` of the
        slots and 100)."""
        n = max(1, self._n_slots)
        df = np.where(words >= 0, self._df[np.maximum(words, 0)], 0)
        wt = np.log((n + 1.0) / (df + 1.0)).astype(np.float32)
        stop = max(100.0, self.params.max_df_share * n)  # a small list has no stop words
        wt[(words < 0) | (df == 0) | (df > stop)] = 0.0
        return wt

    def search(self, q: LocalFeatures, top: int = 8) -> list[Candidate]:
        """The ``top`` known images with the highest vote (best slot each), best first.
        Thread-safe against one writer; each thread keeps its own vote scratch.

        When fewer than ``top`` images get a vote within ``ht`` bits (a small list: among
        10^5 and more known sets a whole search votes for thousands), the free places are
        filled from the images voted for within ``ht_fill`` bits, ranked by their tentative
        descriptor pairs with the query (:func:`hashwatch.robust.verify.candidate_pairs`, the
        first step of verification; at most ``FILL_POOL * top`` records read): among a few known
        images the own image of a stretched copy often has no posting within ``ht`` and one
        or two chance-like votes within ``ht_fill`` (BENCHMARKS.md, issue 11, "Filling the
        nominees of a small list"); an index of at most ``FILL_POOL * top`` live sets puts
        all its images in that pool, voted or not. At most ``top`` images either way, so the
        verified pairs per query (:func:`hashwatch.robust.verify.nominee_ceiling`) are
        unchanged."""
        from hashwatch.robust import kpcore

        if len(q.desc) == 0 or not self._n_live:
            return []
        kpcore.require()
        words, sigs, wt = self.query_words(q)
        qw = np.ascontiguousarray(words, np.int64).ravel()
        qs = np.ascontiguousarray(sigs, np.uint16).ravel()
        qwt = np.ascontiguousarray(wt, np.float32).ravel()
        m = words.shape[1]
        segs = self._segments_now()
        out = self._best_images(segs, len(q.desc), qw, qs, qwt, m, self.params.ht, top)
        scratch = _scratch(0)
        scratch.last["filled"] = 0
        if len(out) < top and self.params.ht_fill > self.params.ht:
            from hashwatch.robust.verify import candidate_pairs

            stats = scratch.last
            seen = {c.image_id for c in out}
            more = [c for c in self._best_images(segs, len(q.desc), qw, qs, qwt, m,
                                                 self.params.ht_fill, FILL_POOL * top)
                    if c.image_id not in seen]
            if self._n_live <= FILL_POOL * top:
                # a list this small is wholly in the pool, voted or not: with 2^20 words
                # most of its lists are empty, and a query may vote for none of a few
                # images it holds (a mirrored cell of a grid among 4 known images)
                more += self._unvoted(seen | {c.image_id for c in more})
            n_pairs = [len(candidate_pairs(q, self.features(c.slot))) for c in more]
            order = sorted(range(len(more)), key=lambda i: -n_pairs[i])  # stable: vote order
            out += [more[i] for i in order[: top - len(out)]]
            scratch.last = {**stats, "filled": len(more)}
        return out

    def _unvoted(self, voted: set[int]) -> list[Candidate]:
        """The live images not in ``voted``, first live slot each, vote 0 (slot order)."""
        out: list[Candidate] = []
        taken = set(voted)
        dead, imgs = self._dead.view, self._slots.view
        for s in np.flatnonzero(~dead[: self._n_slots]).tolist():
            im = int(imgs[s])
            if im not in taken:
                taken.add(im)
                out.append(Candidate(im, s, 0.0))
        return out

    def _best_images(self, segs: list[_Segment], nq: int, qw: np.ndarray, qs: np.ndarray,
                     qwt: np.ndarray, m: int, ht: int, top: int) -> list[Candidate]:
        """One vote over the postings within ``ht`` bits: the ``top`` best-voted live images
        (best slot each), best first."""
        from hashwatch.robust import kpcore

        n_slots = max(s.slot_hi for s in segs) if segs else 0
        scratch = _scratch(n_slots)
        while True:
            acc, votes, touched = scratch.acc, scratch.votes, scratch.touched
            stamp = scratch.next_stamp(nq)
            nt = scanned = passed = 0
            for s in segs:
                nt, sc, pa = kpcore.scan(s.offsets, s.sigs, s.ids, qw, qs, qwt, ht,
                                         stamp, acc, votes, touched, nt, m)
                scanned += sc
                passed += pa
            if nt <= len(touched):
                break
            # more slots voted than the list holds (~5*10^5 a search at 2*10^7 sets, growing
            # with N): grow the list and scan again under a new stamp, so that the nominees'
            # tie order (the slot voted for first) never depends on the list's size
            scratch.grow_touched(max(2 * len(touched), nt + nt // 4))
        scratch.last = {"scanned": scanned, "passed": passed, "touched": nt}
        k = 4 * top
        dead = self._dead.view
        # the k best live slots (C: one pass in touched order over the compact votes;
        # nothing to reset, the next search's stamps are newer)
        best = np.empty(k, np.int64)
        best_v = np.empty(k, np.float32)
        got = kpcore.collect(votes, touched, nt, dead, k, best, best_v)
        cand, v = best[:got], best_v[:got]
        imgs = self._slots.view
        out: list[Candidate] = []
        seen: set[int] = set()
        for s, vote in zip(cand.tolist(), v.tolist(), strict=True):
            im = int(imgs[s])
            if im in seen:
                continue
            seen.add(im)
            out.append(Candidate(im, s, float(vote)))
            if len(out) == top:
                break
        return out

    # -- persistence -------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike[str], *, meta: dict[str, object] | None = None,
             replace: bool = False) -> bool:
        """Write the index into ``folder`` (created 0700; files 0600): sealed segments as
        ``seg-*.npy`` triples, the verification store ``verify.bin`` (+ ``verify.off.npy``),
        slots, tombstones, the vocabulary (``vocab.npz``; a shipped one only named in the
        manifest, :data:`hashwatch.robust.vocab.SHIPPED`) and ``manifest.json`` last (an
        index is read only through a complete manifest, which also holds ``meta``, given
        back as ``.meta``).

        Several processes may hold the same saved index: a save takes an exclusive lock on
        the folder and is refused (returns False, nothing written) when another process saved
        it since this one loaded or saved it; this process then keeps its changes in memory.
        ``replace``: write over whatever index the folder holds (a rebuild).
        """
        folder = Path(folder)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._lock, _folder_lock(folder):
            disk_gen = _generation(folder)
            mine = self._path == folder and disk_gen == self._gen
            if disk_gen is not None and not mine and not replace:
                return False
            if replace and not mine:
                self._path = None  # rewrite every file
            if meta is not None:
                self.meta = dict(meta)
            gen_before = self._gen
            self._gen = (disk_gen or 0) + 1
            try:
                self._save_files(folder)
            except BaseException:
                # nothing was published (the manifest is written last): a later save
                # retries as the same owner
                self._gen = gen_before
                raise
        return True

    def _save_files(self, folder: Path) -> None:
        self._seal()
        names = []
        for seg in self._segments:
            if seg.name is None or not (folder / f"{seg.name}.ids.npy").exists():
                seg.name = f"seg-{seg.slot_lo:010d}-{seg.slot_hi:010d}"
                for part in ("offsets", "sigs", "ids"):
                    _write_array(folder / f"{seg.name}.{part}.npy", getattr(seg, part))
            names.append(seg.name)
        # verification store: records are appended; the offsets say where each one is
        vpath = folder / "verify.bin"
        old_len = int(self._voff[-1])
        fresh_file = self._path != folder or not vpath.exists() or \
            vpath.stat().st_size < old_len
        fd = os.open(vpath, os.O_CREAT | os.O_WRONLY | (os.O_TRUNC if fresh_file else 0),
                     0o600)
        with os.fdopen(fd, "wb") as fh:
            if fresh_file:
                fh.write(memoryview(self._vbuf)[:old_len])
            fh.seek(old_len)
            fh.truncate(old_len)
            for r in self._vnew:
                fh.write(r)
            fh.flush()
            os.fsync(fh.fileno())
        ends = old_len + np.cumsum([len(r) for r in self._vnew], dtype=np.int64)
        voff = np.concatenate([self._voff, ends.astype(np.uint64)])
        _write_array(folder / "verify.off.npy", voff)
        _write_array(folder / "slots.npy", self._slots.view)
        _write_array(folder / "dead.npy", self._dead.view)
        _write_array(folder / "df.npy", self._df)
        shipped = self.vocab.shipped
        if shipped is None and (self._path != folder or not (folder / "vocab.npz").exists()):
            # a rebuild over another index (e.g. of the global signature bits) writes its own
            vtmp = folder / "vocab.npz.tmp"
            self.vocab.save(vtmp)
            os.chmod(vtmp, 0o600)
            os.replace(vtmp, folder / "vocab.npz")
        man = {"format": FORMAT, "generation": self._gen, "vocab": self.vocab.digest(),
               # a shipped vocabulary is named, not copied (robust/data: 50 MB for v20)
               **({"vocab_file": shipped} if shipped else {}),
               "signature_scheme": self.vocab.sig_scheme,
               # ht_fill, m_few and few are query side (replaced by today's defaults on load)
               # and newer than the format: left out, so the manifest stays what earlier
               # releases read
               "params": {k: v for k, v in asdict(self.params).items()
                          if k not in ("ht_fill", "m_few", "few")},
               "segments": names, "slots": self._n_slots, "verify_bytes": int(voff[-1]),
               "meta": self.meta}
        tmp = folder / "manifest.json.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(man, fh)
        os.replace(tmp, folder / "manifest.json")
        if shipped:
            # the copy of an index this one was rebuilt over (the manifest no longer names it)
            (folder / "vocab.npz").unlink(missing_ok=True)
        for stale in folder.glob("seg-*.npy"):
            if stale.name.split(".")[0] not in names:
                stale.unlink()
        # the saved records now live in the file
        self._vbuf = np.memmap(vpath, np.uint8, "r") if voff[-1] else np.zeros(0, np.uint8)
        self._voff = voff
        self._vnew = []
        self._path = folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, mmap: bool = True,
             params: KeypointParams | None = None) -> KeypointIndex:
        """Open a saved index. With ``mmap`` the postings and the verification store are
        mapped read-only (processes share their pages); additions stay in this process until
        it saves. Without ``params``, the build-side parameters are those saved and the
        query-side ones (:data:`QUERY_SIDE`) today's defaults, so an index saved under older
        defaults is searched as a new one would be. Raises ValueError when the folder holds no
        complete index or one of a format this version cannot read, or when its vocabulary's
        signature scheme is not the one its manifest records, or when it names a shipped
        vocabulary this version does not ship; ``record_format`` tells an index
        of format 1 (whose records a caller may want to rebuild, as
        :class:`hashwatch.keypoint_feed.KeypointFeed` does). The index is searched (and grown)
        with the vocabulary saved in it, so its postings' signature scheme
        (``ix.vocab.sig_scheme``: ``"global"`` before issue 10's per-word signatures) never
        mixes with another."""
        folder = Path(folder)
        try:
            man = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"no keypoint index at {folder}: {exc}") from None
        if man.get("format") not in (1, FORMAT):
            raise ValueError(f"keypoint index at {folder} has format {man.get('format')}; "
                             f"this version reads formats 1 and {FORMAT}")
        if man.get("vocab_file"):
            vocab = shipped_vocabulary(man["vocab_file"], man["vocab"])
        else:
            vocab = Vocabulary.load(folder / "vocab.npz")
            if vocab.digest() != man["vocab"]:
                raise ValueError("keypoint index vocabulary does not match its manifest")
        # the postings' signatures were made with the index's own vocabulary, which it keeps
        # (vocab.npz) and searches with: an index of the global scheme stays global
        scheme = man.get("signature_scheme", "global")  # saved before the scheme was recorded
        if scheme != vocab.sig_scheme:
            raise ValueError(f"keypoint index at {folder} records signature scheme {scheme!r} "
                             f"but its vocabulary has {vocab.sig_scheme!r}")
        if params is None:
            now = KeypointParams()
            params = replace(KeypointParams(**man["params"]),
                             **{k: getattr(now, k) for k in QUERY_SIDE})
        ix = cls(vocab, params)
        ix.meta = dict(man.get("meta") or {})
        ix.record_format = int(man["format"])
        ix._gen = int(man.get("generation", 0))
        mode = "r" if mmap else None
        for name in man["segments"]:
            arrs = [np.load(folder / f"{name}.{p}.npy", mmap_mode=mode)
                    for p in ("offsets", "sigs", "ids")]
            lo, hi = (int(x) for x in name.split("-")[1:3])
            ix._segments.append(_Segment(*arrs, lo, hi, name))
        n = int(man["slots"])
        ix._n_slots = n
        ix._pending_lo = n
        ix._slots = _Grow(np.int64, np.load(folder / "slots.npy")[:n])
        ix._dead = _Grow(np.bool_, np.load(folder / "dead.npy")[:n])
        ix._n_live = int(n - ix._dead.view.sum())
        ix._n_images = None
        ix._df = np.array(np.load(folder / "df.npy"), np.int64)
        ix._voff = np.array(np.load(folder / "verify.off.npy")[: n + 1], np.uint64)
        vlen = int(ix._voff[-1])
        if vlen:
            ix._vbuf = (np.memmap(folder / "verify.bin", np.uint8, "r", shape=(vlen,)) if mmap
                        else np.fromfile(folder / "verify.bin", np.uint8, vlen))
        ix._path = folder
        return ix


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock on ``folder/.lock`` (advisory, POSIX; a no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(folder / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _generation(folder: Path) -> int | None:
    try:
        return int(json.loads((folder / "manifest.json").read_text()).get("generation", 0))
    except (OSError, ValueError):
        return None


class _Scratch(threading.local):
    def __init__(self) -> None:
        from hashwatch.robust.kpcore import ACC_DTYPE

        # per slot: the stamp of the last query descriptor that voted, its place in touched;
        # the summed votes of the touched slots in `votes`, parallel to `touched`
        self.acc = np.zeros(0, ACC_DTYPE)
        self.touched = np.zeros(1 << 20, np.uint32)
        self.votes = np.zeros(1 << 20, np.float32)
        self.stamp = 1
        self.last: dict[str, int] = {}

    def grow(self, n: int) -> None:
        if len(self.acc) < n:
            m = max(n, int(len(self.acc) * 1.25) + 1024)
            acc = np.zeros(m, self.acc.dtype)
            acc[: len(self.acc)] = self.acc
            self.acc = acc

    def grow_touched(self, n: int) -> None:
        self.touched = np.zeros(n, np.uint32)
        self.votes = np.zeros(n, np.float32)

    def next_stamp(self, nq: int) -> int:
        if self.stamp + nq >= 0xFFFFFFF0:  # wrap: forget old stamps
            self.acc["stamp"] = 0
            self.stamp = 1
        s = self.stamp
        self.stamp += nq
        return s


_SCRATCH = _Scratch()


def _scratch(n_slots: int) -> _Scratch:
    _SCRATCH.grow(n_slots)
    return _SCRATCH


def last_search_stats() -> dict[str, int]:
    """This thread's last :meth:`KeypointIndex.search`: postings scanned, postings within the
    signature threshold, slots that got a vote (of the first vote, within ``ht``),
    and ``filled``: the images the fill ranked (0: the first vote filled ``top``)."""
    return dict(_SCRATCH.last)
