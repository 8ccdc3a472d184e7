"""Server set-up at any list size: a streaming, resumable build of the blinded table.

The table for a 20M-entry list has 160M keys and 200M slots (6.4 GB of points) and costs ~3
CPU-hours of ristretto255 blinding, so the build never holds Python objects per key and can stop
and resume. Stages, each saved in ``OUT/.build`` before the next starts:

1. ingest: list hashes -> ``hashes.npy`` / ``ids.npy`` (a set: each hash once, first id wins);
2. keys: per chunk of hashes, in worker processes, the ``tables`` match keys and their keyed
   slot digests; per table, duplicate keys dropped (near-duplicate list entries share keys);
3. place: cuckoo placement of every key in one of its 3 slots -> ``owner.npy``;
4. blind: slot chunks in worker processes; each writes alpha * H(key), or a random point for an
   empty slot, straight into ``table.bin.part`` and is recorded in ``blinded.txt`` once written;
5. finish: digest, signature, secret file (mode 0600), then ``table.bin.part`` -> ``table.bin``.

The secrets (blinding scalar, signing key) are drawn once and kept in the work folder (0600), so a
resumed build continues the same table. A finished folder never contains a partial table.bin.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import sodium
from .keys import DEFAULT_DESIGN, KeyDesign
from .table import (
    COMMIT_DOMAIN,
    KEY_DOMAIN,
    N_HASHES,
    TABLE_MAGIC,
    Commitment,
    Params,
    PublicTable,
    ServerSecret,
    table_digest,
)

log = logging.getLogger(__name__)

WORK = ".build"
HASH_CHUNK = 50_000  # hashes per key job (x8 keys)
SLOT_CHUNK = 1 << 18  # slots per blinding job (~14 s of one core when full)

FILL_DOMAIN = b"hashwatch-psi-fill-v1"  # filler points of empty slots in a seeded build

# stage, done, total: the CLI turns this into a progress bar; the library stays UI-free
Progress = Callable[[str, int, int], None]
# ordered map of a per-chunk function over jobs, at most ``ahead`` jobs per worker in flight:
# a local process pool by default, Ray tasks with ``hashwatch.distributed.ray_ordered_map``
Mapper = Callable[..., Iterator]  # (fn, jobs, ahead=...) -> results in job order


class BuildError(Exception):
    """The build cannot go on (bad input, or a work folder that belongs to another build)."""


@dataclass(frozen=True)
class BuildSummary:
    entries: int
    keys: int
    slots: int
    table_bytes: int
    digest: str
    sign_pk: str
    out: Path


def _private_write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        np.save(f, arr, allow_pickle=False)
    os.replace(tmp, path)


# -- stage 1 ---------------------------------------------------------------------------------


def _ingest(entries: Iterable[tuple[object, str]]) -> tuple[np.ndarray, np.ndarray]:
    ids: list[str] = []
    raw = bytearray()
    for n, (eid, hx) in enumerate(entries, 1):
        hx = hx.strip()
        try:
            b = bytes.fromhex(hx)
        except ValueError:
            b = b""
        if len(b) != 32:
            raise BuildError(f"entry {n} ({eid}): not a 64-hex-digit PDQ hash")
        raw += b
        ids.append(str(eid))
    hmat = np.frombuffer(bytes(raw), dtype=np.uint8).reshape(-1, 32)
    del raw
    if len(hmat) == 0:
        return hmat.copy(), np.array([], dtype=str)
    keep = _unique_rows(hmat)  # a set of hashes
    ids_arr = np.array(ids)
    del ids
    return hmat[keep].copy(), ids_arr[keep]


# -- stage 2 ---------------------------------------------------------------------------------


def _keys_job(args: tuple[np.ndarray, KeyDesign, bytes]) -> list[tuple[bytes, bytes]]:
    """For each table: (keys blob m*16, slot digests blob m*24) of one chunk of hashes."""
    hmat, design, seed = args
    bits = np.unpackbits(hmat, axis=1)
    out = []
    for i in range(design.tables):
        packed = np.packbits(bits[:, design.positions[i]], axis=1)
        prefix = bytes([i])
        keys = [design._key_packed(prefix, row) for row in map(bytes, packed)]
        digests = [hashlib.blake2b(k, digest_size=24, key=seed).digest() for k in keys]
        out.append((b"".join(keys), b"".join(digests)))
    return out


def _unique_rows(rows: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct row (uint8, a multiple of 8 bytes
    wide), in original order: a stable sort on the 64-bit words, the first of each run."""
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64)
    w = rows.view("<u8")
    order = np.lexsort(w.T[::-1])
    s = w[order]
    first = np.ones(len(s), dtype=bool)
    first[1:] = np.any(s[1:] != s[:-1], axis=1)
    return np.sort(order[first])


def _pool(workers: int) -> ProcessPoolExecutor | None:
    return ProcessPoolExecutor(max_workers=workers) if workers > 1 else None


def _imap(fn: Callable, jobs: Iterator, workers: int, ahead: int = 4) -> Iterator:  # type: ignore[type-arg]
    """Ordered map with at most ``workers * ahead`` jobs in flight (bounded memory)."""
    pool = _pool(workers)
    if pool is None:
        for j in jobs:
            yield fn(j)
        return
    try:
        pending: list = []
        for j in jobs:
            pending.append(pool.submit(fn, j))
            if len(pending) >= workers * ahead:
                yield pending.pop(0).result()
        for f in pending:
            yield f.result()
    finally:  # stopped early (error, interrupt): drop the queued jobs, do not wait for them
        pool.shutdown(cancel_futures=True)


def _make_keys(hmat: np.ndarray, design: KeyDesign, seed: bytes, imap: Mapper, load: float,
               min_slots: int, progress: Progress | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Distinct keys, their 3 candidate slots each, and the slot count."""
    per_keys: list[list[np.ndarray]] = [[] for _ in range(design.tables)]
    per_dig: list[list[np.ndarray]] = [[] for _ in range(design.tables)]
    jobs = ((hmat[i : i + HASH_CHUNK], design, seed) for i in range(0, len(hmat), HASH_CHUNK))
    done = 0
    for res in imap(_keys_job, jobs, ahead=4):
        for i, (kb, db) in enumerate(res):
            per_keys[i].append(np.frombuffer(kb, np.uint8).reshape(-1, 16))
            per_dig[i].append(np.frombuffer(db, "<u8").reshape(-1, 3))
        done = min(len(hmat), done + HASH_CHUNK)
        if progress:
            progress("keys", done, len(hmat))
    keys_out, dig_out = [], []
    for i in range(design.tables):  # keys carry their table number: duplicates only within one
        k = np.concatenate(per_keys[i]) if per_keys[i] else np.zeros((0, 16), np.uint8)
        d = np.concatenate(per_dig[i]) if per_dig[i] else np.zeros((0, 3), "<u8")
        per_keys[i] = per_dig[i] = []
        u = _unique_rows(k)
        keys_out.append(k[u])
        dig_out.append(d[u])
        del k, d
    n_keys = sum(len(k) for k in keys_out)
    n_slots = max(min_slots, int(np.ceil(n_keys / load)))
    # slot_positions(): the three little-endian words of the keyed digest, mod n_slots
    ptype = np.uint32 if n_slots < 2**32 else np.uint64
    pos = []
    while dig_out:
        pos.append((dig_out.pop(0) % np.uint64(n_slots)).astype(ptype))
    return np.concatenate(keys_out), np.concatenate(pos), n_slots


# -- stage 3 ---------------------------------------------------------------------------------


def cuckoo_place(pos: np.ndarray, n_slots: int, rng: np.random.Generator) -> np.ndarray:
    """Assign every item (row of ``pos``: its 3 candidate slots) to a distinct slot.

    Vectorised greedy rounds place almost all items; a random walk with eviction places the
    rest. Returns owner[slot] = item index or -1."""
    m = pos.shape[0]
    idx = np.int64 if m >= 2**31 - 1 else np.int32
    owner = np.full(n_slots, -1, dtype=idx)
    unplaced = np.arange(m, dtype=idx)
    placed = np.zeros(m, dtype=bool)
    for _ in range(4):
        for j in range(N_HASHES):
            if unplaced.size == 0:
                break
            s = pos[unplaced, j]
            free = owner[s] == -1
            cand, s = unplaced[free], s[free]
            s_u, first = np.unique(s, return_index=True)
            owner[s_u] = cand[first]
            placed[cand[first]] = True
            unplaced = unplaced[~placed[unplaced]]
    max_steps = 500
    for item in unplaced.tolist():
        cur, prev_slot = item, -1
        for _ in range(max_steps):
            choices = pos[cur]
            free = [int(c) for c in choices if owner[c] == -1]
            if free:
                owner[free[0]] = cur
                cur = -1
                break
            options = [int(c) for c in choices if c != prev_slot] or [int(choices[0])]
            slot = options[int(rng.integers(len(options)))]
            owner[slot], cur = cur, int(owner[slot])
            prev_slot = slot
        if cur != -1:
            raise BuildError("cuckoo insertion failed; lower the load factor")
    return owner


# -- stage 4 ---------------------------------------------------------------------------------


def _blind_job(args: tuple[bytes, int, int, bytes, bytes, bytes | None]) -> bytes:
    """Points of one slot chunk (``n`` slots from ``first``): alpha * H(key) for a filled
    slot, a filler point for an empty one (random, or derived from ``fill_key`` in a seeded
    build). Pure: the driver writes the result, so a local pool and Ray run the same code."""
    alpha, first, n, filled_bits, keys, fill_key = args
    filled = np.unpackbits(np.frombuffer(filled_bits, np.uint8), count=n).astype(bool)
    out = bytearray()
    k = 0
    for i, f in enumerate(filled.tolist()):
        if f:
            pt = sodium.hash_to_point(KEY_DOMAIN, keys[16 * k : 16 * k + 16])
            out += sodium.scalar_mult(alpha, pt)
            k += 1
        elif fill_key is None:
            out += sodium.random_point()
        else:
            out += sodium.hash_to_point(FILL_DOMAIN, fill_key + (first + i).to_bytes(8, "little"))
    return bytes(out)


def _seeded_secrets(seed: bytes) -> dict[str, bytes]:
    """Every secret of a seeded build, derived from the 32-byte ``seed``."""
    pk, sk = sodium.sign_keypair(sodium.kdf(b"hw-psi-sign", seed))
    return {"alpha": sodium.scalar_reduce(sodium.kdf(b"hw-psi-alpha", seed, 64)),
            "sign_sk": sk, "sign_pk": pk, "cuckoo_seed": sodium.kdf(b"hw-psi-cuckoo", seed),
            "fill_key": sodium.kdf(b"hw-psi-fill", seed),
            "place_seed": sodium.kdf(b"hw-psi-place", seed, 16)}


# -- the build -------------------------------------------------------------------------------


def _header_bytes(params: Params) -> bytes:
    h = params.to_json()
    return TABLE_MAGIC + len(h).to_bytes(4, "little") + h


def _file_digest(path: Path, header_len: int, params_json: bytes) -> bytes:
    """table_digest over the points as they sit in the file (mapped, not read into memory)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            return table_digest(params_json, view[header_len:])
        finally:
            view.release()


def build_table_files(
    entries: Callable[[], Iterable[tuple[object, str]]],
    out: str | os.PathLike,
    *,
    fingerprint: str = "",
    design: KeyDesign = DEFAULT_DESIGN,
    threshold: int = 30,
    load: float = 0.8,
    workers: int = 1,
    sign_seed: bytes | None = None,
    list_label: str = "",
    synthetic_rate: float = 0.01,
    synthetic_max: int = 24,
    min_slots: int = 1024,
    progress: Progress | None = None,
    mapper: Mapper | None = None,
    seed: bytes | None = None,
) -> BuildSummary:
    """Build ``table.bin``, ``commitment.json`` and ``server-secret.npz`` in ``out``.

    ``entries`` is called (once, only if the ingest stage is not already saved) for
    (entry_id, pdq_hex) pairs. ``fingerprint`` names the input (e.g. path, size, mtime); a work
    folder left by a build of another input or with other settings is refused, not mixed in.

    ``mapper``: runs the per-chunk functions (keys, blinding); default: ``workers`` local
    processes; ``hashwatch.distributed.ray_ordered_map`` runs them as Ray tasks (placement
    and signing stay here). ``seed``: a 32-byte secret from which every secret, the cuckoo
    placement and the filler points are derived, so the same seed and list give a
    byte-identical ``table.bin`` on any engine (keep it as secret as the server secret).
    """
    def imap(fn: Callable, jobs: Iterator, ahead: int = 4) -> Iterator:  # type: ignore[type-arg]
        return _imap(fn, jobs, workers, ahead)

    run = mapper or imap
    if seed is not None and len(seed) != 32:
        raise BuildError("seed must be 32 bytes")
    if not 0 < load < 0.95:
        raise BuildError("load factor must be in (0, 0.95)")
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    work = outp / WORK
    work.mkdir(mode=0o700, exist_ok=True)
    settings = {"fingerprint": fingerprint, "design": design.to_dict(), "threshold": threshold,
                "load": load, "list_label": list_label, "synthetic_rate": synthetic_rate,
                "synthetic_max": synthetic_max, "min_slots": min_slots,
                "seeded": seed is not None}
    state_path = work / "state.json"
    state: dict = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state and state.get("settings") != settings:
        raise BuildError(f"{work} holds a build of another input or with other settings; "
                         "remove it (or pass restart) to start over")

    def save_state(**kw: object) -> None:
        state.update(kw, settings=settings)
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, state_path)

    secret_path = work / "secret.json"
    if not secret_path.exists():
        if seed is not None:
            drawn = _seeded_secrets(seed)
        else:
            pk, sk = sodium.sign_keypair(sign_seed)
            drawn = {"alpha": sodium.random_scalar(), "sign_sk": sk, "sign_pk": pk,
                     "cuckoo_seed": sodium.random_bytes(32)}
        _private_write(secret_path, json.dumps({k: v.hex() for k, v in drawn.items()}).encode())
    sec = {k: bytes.fromhex(v) for k, v in json.loads(secret_path.read_text()).items()}

    if state.get("stage", 0) < 1:
        hmat, ids = _ingest(entries())
        _save_npy(work / "hashes.npy", hmat)
        _save_npy(work / "ids.npy", ids)
        save_state(stage=1, entries=len(hmat))
    if state["stage"] < 2:
        hmat = np.load(work / "hashes.npy")
        keys, pos, n_slots = _make_keys(hmat, design, sec["cuckoo_seed"], run, load,
                                        min_slots, progress)
        del hmat
        _save_npy(work / "keys.npy", keys)
        _save_npy(work / "pos.npy", pos)
        save_state(stage=2, keys=len(keys), slots=n_slots)
    n_slots = int(state["slots"])
    if state["stage"] < 3:
        pos = np.load(work / "pos.npy")
        if progress:
            progress("place", 0, 1)
        rng = np.random.default_rng(
            int.from_bytes(sec["place_seed"], "little") if "place_seed" in sec else None)
        owner = cuckoo_place(pos, n_slots, rng)
        del pos
        _save_npy(work / "owner.npy", owner)
        (work / "pos.npy").unlink()
        save_state(stage=3)
        if progress:
            progress("place", 1, 1)

    params = Params(design, n_slots, sec["cuckoo_seed"], sodium.scalar_mult_base(sec["alpha"]),
                    threshold=threshold, dhf_dim=max(48, threshold + synthetic_max),
                    synthetic_rate=synthetic_rate, synthetic_max=synthetic_max,
                    list_label=list_label)
    header = _header_bytes(params)
    part = outp / "table.bin.part"
    total = len(header) + 32 * n_slots
    if state["stage"] < 4:
        if not part.exists() or part.stat().st_size != total:
            with open(part, "wb") as f:
                f.write(header)
                f.truncate(total)
            (work / "blinded.txt").unlink(missing_ok=True)
        done_path = work / "blinded.txt"
        done = {int(x) for x in done_path.read_text().split()} if done_path.exists() else set()
        owner = np.load(work / "owner.npy", mmap_mode="r")
        keys = np.load(work / "keys.npy", mmap_mode="r")
        n_chunks = -(-n_slots // SLOT_CHUNK)
        todo = [c for c in range(n_chunks) if c not in done]

        def job(c: int) -> tuple[bytes, int, int, bytes, bytes, bytes | None]:
            o = np.asarray(owner[c * SLOT_CHUNK : (c + 1) * SLOT_CHUNK])
            filled = o >= 0
            return (sec["alpha"], c * SLOT_CHUNK, len(o), np.packbits(filled).tobytes(),
                    keys[o[filled]].tobytes(), sec.get("fill_key"))

        fd = os.open(part, os.O_WRONLY)
        with open(done_path, "a") as log_f:
            # in submission order, so a chunk is recorded only once its points are written
            for c, points in zip(todo, run(_blind_job, map(job, todo), ahead=2), strict=True):
                os.pwrite(fd, points, len(header) + 32 * c * SLOT_CHUNK)
                log_f.write(f"{c}\n")
                log_f.flush()
                done.add(c)
                if progress:
                    progress("blind", len(done), n_chunks)
        os.fsync(fd)
        os.close(fd)
        del owner, keys
        if part.stat().st_size != total:
            raise BuildError(f"{part} is {part.stat().st_size} bytes, expected {total}")
        save_state(stage=4)

    pj = params.to_json()
    digest = _file_digest(part, len(header), pj)
    commitment = Commitment(digest, sodium.sign(sec["sign_sk"], COMMIT_DOMAIN + digest),
                            sec["sign_pk"])
    hmat = np.load(work / "hashes.npy")
    ids = np.load(work / "ids.npy")
    secret = ServerSecret(sec["alpha"], sec["sign_sk"], sec["sign_pk"], ids, hmat)
    secret.save(outp / "server-secret.npz")
    (outp / "commitment.json").write_text(commitment.to_json())
    os.replace(part, outp / "table.bin")
    n_keys = int(state["keys"])
    shutil.rmtree(work)
    log.info("built PSI table: %d entries, %d keys, %d slots", len(hmat), n_keys, n_slots)
    return BuildSummary(len(hmat), n_keys, n_slots, total, digest.hex(), sec["sign_pk"].hex(),
                        outp)


def build_table(entries: Iterable[tuple[object, str]], **kw: object
                ) -> tuple[PublicTable, ServerSecret]:
    """The table and secret in memory (small lists, tests, the demo): the same build, in a
    temporary folder."""
    with tempfile.TemporaryDirectory(prefix="hw-psi-") as d:
        build_table_files(lambda: entries, d, **kw)  # type: ignore[arg-type]
        table = PublicTable.load(d)
        secret = ServerSecret.load(Path(d) / "server-secret.npz")
    return table, secret
