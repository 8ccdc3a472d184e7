"""Known sets beyond the generated scale images (study only): the id ranges of scale images
and synthetic sets, keypoint sets recombined from two real ones (:func:`recombine`, for list
sizes beyond the generated images) and sets of postings drawn from the index itself
(:func:`add_synthetic`, for the index-only nomination study at 2*10^7)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hashwatch.robust.keypoint_index import KeypointIndex
from hashwatch.robust.local import LocalFeatures

SCALE_ID0 = 10_000_000  # scale image i has id SCALE_ID0 + i; the known images 0..n_known-1
SYNTH_ID0 = 1_000_000_000  # synthetic (recombined) keypoint set j has image id SYNTH_ID0 + j


def recombine(a: LocalFeatures, b: LocalFeatures, rng: np.random.Generator) -> LocalFeatures:
    """A recombined known keypoint set (study only, for list sizes beyond the generated
    images): the left (or top) part of real set ``a`` beside the right (or bottom) part of real
    set ``b``, cut at 30-70% of each, as a two-picture collage of their keypoints would hold
    them. Descriptors, positions within each part and strength order are real; the pair is
    new. Keypoints are interleaved by their rank within their own set (strongest first)."""
    vertical = bool(rng.integers(2))
    ax, bx = (0, 1) if vertical else (1, 0)
    ca = rng.uniform(0.3, 0.7) * a.size[ax]
    cb = rng.uniform(0.3, 0.7) * b.size[ax]
    ka = np.flatnonzero(a.xy[:, ax] < ca)
    kb = np.flatnonzero(b.xy[:, ax] >= cb)
    xy_b = b.xy[kb].copy()
    xy_b[:, ax] += np.float32(ca - cb)
    w_ax = int(round(ca + b.size[ax] - cb))
    w_other = max(a.size[bx], b.size[bx])
    size = (w_ax, w_other) if vertical else (w_other, w_ax)
    rank = np.concatenate([np.arange(len(ka)) / max(1, len(ka)),
                           np.arange(len(kb)) / max(1, len(kb))])
    order = np.argsort(rank, kind="stable")

    def cat(x: np.ndarray | None, y: np.ndarray | None) -> np.ndarray | None:
        return None if x is None or y is None else np.concatenate([x[ka], y[kb]])[order]

    xy = np.concatenate([a.xy[ka], xy_b])[order].astype(np.float32)
    return LocalFeatures(xy, np.concatenate([a.desc[ka], b.desc[kb]])[order], size, {},
                         cat(a.angle, b.angle), cat(a.octave, b.octave))


def add_synthetic(kp: KeypointIndex, n: int, *, seed: int = 0, chunk: int = 1_000_000,
                  say: Callable[[str], None] = lambda s: None) -> None:
    """Add ``n`` synthetic keypoint sets to ``kp`` (study only): each holds ``n_index``
    postings drawn at random from the postings already in the index, i.e. real ORB
    descriptors of real scale images (their words and signatures) recombined into sets that
    belong to no picture. They weigh on the inverted file exactly as real sets do (list
    lengths, document frequencies, chance votes) but have no verification record: a nominee
    among them is counted as nominated, never verified."""
    from hashwatch.robust.keypoint_index import _Segment

    segs = kp._segments_now()
    pool_w = np.concatenate([np.repeat(np.arange(len(s.offsets) - 1, dtype=np.int32),
                                       np.diff(s.offsets).astype(np.int64)) for s in segs])
    pool_s = np.concatenate([np.asarray(s.sigs) for s in segs])
    rng = np.random.default_rng([seed, 0x5E7])
    per = kp.params.n_index
    kp._seal()
    done = 0
    while done < n:
        m = min(chunk, n - done)
        lo = kp._n_slots
        pick = rng.integers(0, len(pool_w), size=m * per)
        words = pool_w[pick]
        seg = _Segment.build(kp.vocab.n_words, words, pool_s[pick],
                             np.repeat(np.arange(lo, lo + m, dtype=np.uint32), per), lo, lo + m)
        del pick
        kp._segments.append(seg)
        kp._df += np.bincount(words, minlength=kp.vocab.n_words)
        kp._slots.append(SYNTH_ID0 + np.arange(done, done + m, dtype=np.int64))
        kp._dead.append(np.zeros(m, bool))
        kp._n_slots += m
        kp._n_live += m
        kp._pending_lo = kp._n_slots
        kp._n_images = None
        done += m
        say(f"  synthetic {done:,}/{n:,}")
