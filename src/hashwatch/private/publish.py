"""The list custodian's side: set up the table, publish monthly deltas, compact, rotate keys.

A table directory holds what devices fetch (``chain.json``, ``params-eNNNN.json``,
``chunk-eNNNN-NNNN.bin``) and, in ``secret/`` (0700, files 0600), what only the server keeps:
the Ed25519 signing key, each epoch's blinding scalar and filler key, the list itself (PDQ
hashes, ids, the version that added each, removals) and the keys of each chunk.

* :meth:`Publisher.create`: epoch 0, chunk 0 (the base) from the whole list;
* :meth:`Publisher.add_delta`: new entries -> one new chunk (keys already in the epoch are
  left out, so a key opens in one chunk only); when the epoch already holds ``chunk_slots``
  chunks, the deltas are merged into one chunk instead (a ``compaction``: devices fetch the
  merged chunk and drop the ones it replaces);
* :meth:`Publisher.rotate`: a new epoch with a new blinding scalar and a base built from the
  current list minus removed entries. This is how removals take effect: until then a removed
  entry still opens vouchers (it never counts towards a report, see ``server``).

Every version is a link of the commitment chain (``chain``) signed with the server key.
Builds stream and resume (``build``): running the same operation again continues it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import sodium
from .build import (
    BuildError,
    Mapper,
    Progress,
    build_chunk,
    local_mapper,
    private_write,
    save_npy,
    unique_rows,
)
from .chain import Link, SignedLink, Witness, sign_link
from .keys import KeyDesign
from .table import (
    DEFAULT_CHUNK_SLOTS,
    DEFAULT_DELTA_OPENINGS,
    DEFAULT_SYNTHETIC_OPEN,
    Params,
    PublicTable,
    chunk_name,
    load_chain,
    params_name,
    save_chain,
)

log = logging.getLogger(__name__)

SECRET = "secret"
WORK = ".build"
HASH_CHUNK = 50_000  # list entries per key job


def _keys_job(args: tuple[bytes, dict]) -> bytes:
    """Match keys of one chunk of list hashes: (n * tables * 16) bytes, entry by entry."""
    hashes, design = args
    h = np.frombuffer(hashes, np.uint8).reshape(-1, 32)
    return KeyDesign.from_dict(design).entry_keys(h).tobytes()


def _seeded_secrets(seed: bytes, epoch: int) -> dict[str, bytes]:
    """The secrets of a seeded build (reproducible on any engine), from a 32-byte seed."""
    e = epoch.to_bytes(4, "big")
    return {"alpha": sodium.scalar_reduce(sodium.kdf(b"hw-psi-alpha", seed + e, 64)),
            "fill_key": sodium.kdf(b"hw-psi-fill", seed + e)}


def read_entries(entries: Iterable[tuple[object, str]]) -> tuple[np.ndarray, np.ndarray]:
    """(id, pdq hex) pairs -> (n, 32) uint8 hashes and ids, each hash once (first id wins).
    Raises BuildError naming the first bad line."""
    ids: list[str] = []
    raw = bytearray()
    for n, (eid, hx) in enumerate(entries, 1):
        try:
            b = bytes.fromhex(str(hx).strip())
        except ValueError:
            b = b""
        if len(b) != 32:
            raise BuildError(f"entry {n} ({eid}): not a 64-hex-digit PDQ hash")
        raw += b
        ids.append(str(eid))
    hmat = np.frombuffer(bytes(raw), dtype=np.uint8).reshape(-1, 32)
    if len(hmat) == 0:
        return hmat.copy(), np.array([], dtype=str)
    keep = unique_rows(hmat)
    return hmat[keep].copy(), np.array(ids)[keep]


@dataclass
class Published:
    """What one operation published."""

    link: SignedLink
    entries: int
    keys: int
    chunk_bytes: int

    @property
    def version(self) -> int:
        return self.link.link.version


class Publisher:
    """The server's table directory (see the module docstring). Open an existing one with
    ``Publisher(out)``; make a new one with :meth:`create`."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self.secret_dir = self.out / SECRET
        try:
            sig = json.loads((self.secret_dir / "signing.json").read_text())
        except OSError as e:
            raise BuildError(f"{self.out} is not a private-matching table directory") from e
        self.sign_sk, self.sign_pk = bytes.fromhex(sig["sk"]), bytes.fromhex(sig["pk"])
        self.links = load_chain(self.out)

    # -- state -------------------------------------------------------------------------------
    @property
    def head(self) -> Link:
        return self.links[-1].link

    @property
    def epoch(self) -> int:
        return self.head.epoch

    def params(self, epoch: int | None = None) -> Params:
        return Params.from_json((self.out / params_name(self.epoch if epoch is None
                                                        else epoch)).read_bytes())

    def epoch_secret(self, epoch: int | None = None) -> dict[str, bytes]:
        e = self.epoch if epoch is None else epoch
        d = json.loads((self.secret_dir / f"epoch-{e:04d}.json").read_text())
        return {k: bytes.fromhex(v) for k, v in d.items()}

    def entries(self) -> dict[str, np.ndarray]:
        """The list as the server holds it: ``hashes`` (n, 32), ``ids``, ``version`` (that
        added each entry), ``removed`` (bool)."""
        with np.load(self.secret_dir / "list.npz", allow_pickle=False) as z:
            return {k: z[k].copy() for k in z.files}

    def table(self) -> PublicTable:
        """The published table as a device sees it (verified)."""
        return PublicTable.open(self.out, self.sign_pk)

    # -- creation ------------------------------------------------------------------------------
    @classmethod
    def create(cls, out: str | os.PathLike, entries: Callable[[], Iterable[tuple[object, str]]],
               *, design: KeyDesign, threshold: int = 30, synthetic_rate: float = 0.01,
               synthetic_max: int = 24, chunk_slots: int = DEFAULT_CHUNK_SLOTS,
               delta_openings: int = DEFAULT_DELTA_OPENINGS,
               list_label: str = "", fingerprint: str = "", seed: bytes | None = None,
               sign_seed: bytes | None = None, mapper: Mapper | None = None, workers: int = 1,
               progress: Progress | None = None) -> Publisher:
        """Epoch 0: the base chunk from the whole list (``entries`` is called once, only if
        the ingest is not already saved from an interrupted run). ``seed`` (32 bytes, secret):
        every secret and filler derives from it, so the same seed and list give byte-identical
        files on any engine. Raises BuildError (also for an existing table: rotate instead)."""
        outp = Path(out)
        if (outp / "chain.json").exists():
            raise BuildError(f"{outp} already holds a table (update, rotate, or remove it)")
        if seed is not None and len(seed) != 32:
            raise BuildError("seed must be 32 bytes")
        outp.mkdir(parents=True, exist_ok=True)
        sdir = outp / SECRET
        sdir.mkdir(mode=0o700, exist_ok=True)
        work = outp / WORK
        work.mkdir(mode=0o700, exist_ok=True)
        settings = {"op": "create", "fingerprint": fingerprint, "design": design.to_dict(),
                    "threshold": threshold, "synthetic_rate": synthetic_rate,
                    "synthetic_max": synthetic_max, "chunk_slots": chunk_slots,
                    "delta_openings": delta_openings, "list_label": list_label,
                    "seeded": seed is not None}
        state = _State(work, settings)
        if not (sdir / "signing.json").exists():
            pk, sk = sodium.sign_keypair(sign_seed if sign_seed is not None else (
                sodium.kdf(b"hw-psi-sign", seed) if seed is not None else None))
            private_write(sdir / "signing.json",
                          json.dumps({"sk": sk.hex(), "pk": pk.hex()}).encode())
        if not (sdir / "epoch-0000.json").exists():
            drawn = _seeded_secrets(seed, 0) if seed is not None else {
                "alpha": sodium.random_scalar(), "fill_key": sodium.random_bytes(32)}
            private_write(sdir / "epoch-0000.json",
                          json.dumps({k: v.hex() for k, v in drawn.items()}).encode())
        if state.get("stage", 0) < 1:
            hmat, ids = read_entries(entries())
            if len(hmat) == 0:
                raise BuildError("the list is empty")
            save_npy(work / "hashes.npy", hmat)
            save_npy(work / "ids.npy", ids)
            state.save(stage=1)
        pub = cls.__new__(cls)
        pub.out, pub.secret_dir = outp, sdir
        sig = json.loads((sdir / "signing.json").read_text())
        pub.sign_sk, pub.sign_pk = bytes.fromhex(sig["sk"]), bytes.fromhex(sig["pk"])
        pub.links = []
        sec = pub.epoch_secret(0)
        params = Params(design, sodium.scalar_mult_base(sec["alpha"]), epoch=0,
                        threshold=threshold, dhf_dim=max(48, threshold + synthetic_max),
                        synthetic_rate=synthetic_rate, synthetic_max=synthetic_max,
                        synthetic_open=list(DEFAULT_SYNTHETIC_OPEN), chunk_slots=chunk_slots,
                        delta_openings=delta_openings, list_label=list_label)
        hmat = np.load(work / "hashes.npy")
        ids = np.load(work / "ids.npy")
        keys = pub._keys(hmat, design, work, state, mapper, workers, progress)
        (outp / params_name(0)).write_bytes(params.to_json())
        summary = build_chunk(keys, outp / chunk_name(0, 0), alpha=sec["alpha"],
                              fill_key=sec["fill_key"], epoch=0, index=0,
                              params_digest=params.digest, work=work / "chunk",
                              mapper=mapper, workers=workers, progress=progress)
        link = Link(0, 0, "base", bytes(32), params.digest, 0, bytes.fromhex(summary.digest),
                    summary.file_bytes, (0,), len(hmat))
        pub._save_list(hmat, ids, np.zeros(len(hmat), np.int64), np.zeros(len(hmat), bool))
        save_npy(sdir / "keys-e0000-c0000.npy", keys)
        pub._append(sign_link(pub.sign_sk, link))
        shutil.rmtree(work)
        return pub

    # -- monthly growth --------------------------------------------------------------------
    def add_delta(self, entries: Iterable[tuple[object, str]], *, mapper: Mapper | None = None,
                  workers: int = 1, progress: Progress | None = None) -> Published:
        """Publish the new entries as the next version (a delta chunk, or a compaction of all
        deltas when the epoch's chunk slots are full). Entries already listed are skipped.
        Raises BuildError if nothing is new."""
        params = self.params()
        head = self.head
        lst = self.entries()
        hmat, ids = read_entries(entries)
        new = ~_isin_rows(hmat, lst["hashes"][~lst["removed"]])
        hmat, ids = hmat[new], ids[new]
        if len(hmat) == 0:
            raise BuildError("no new entries")
        work = self.out / WORK
        work.mkdir(mode=0o700, exist_ok=True)
        state = _State(work, {"op": "delta", "version": head.version + 1,
                              "first": hmat[:1].tobytes().hex(), "n": len(hmat)})
        keys = self._keys(hmat, params.key_design, work, state, mapper, workers, progress)
        held = self._epoch_keys(self.epoch)
        keys = keys[~_isin_rows(keys, held)]
        index = max(head.live) + 1
        compaction = len(head.live) >= params.chunk_slots
        if compaction:  # merge every delta of the epoch (and the new keys) into one chunk
            old = [np.load(self.secret_dir / f"keys-e{self.epoch:04d}-c{c:04d}.npy")
                   for c in head.live[1:]]
            keys = np.concatenate([*old, keys]) if old else keys
        if len(keys) == 0:
            raise BuildError("the new entries add no new keys (near-duplicates of listed ones)")
        sec = self.epoch_secret()
        summary = build_chunk(keys, self.out / chunk_name(self.epoch, index),
                              alpha=sec["alpha"], fill_key=sec["fill_key"], epoch=self.epoch,
                              index=index, params_digest=params.digest, work=work / "chunk",
                              mapper=mapper, workers=workers, progress=progress)
        live = (0, index) if compaction else (*head.live, index)
        link = Link(head.version + 1, self.epoch, "compaction" if compaction else "delta",
                    head.head, params.digest, index, bytes.fromhex(summary.digest),
                    summary.file_bytes, live, len(hmat))
        save_npy(self.secret_dir / f"keys-e{self.epoch:04d}-c{index:04d}.npy", keys)
        self._save_list(np.concatenate([lst["hashes"], hmat]),
                        np.concatenate([lst["ids"], ids]),
                        np.concatenate([lst["version"],
                                        np.full(len(hmat), link.version, np.int64)]),
                        np.concatenate([lst["removed"], np.zeros(len(hmat), bool)]))
        sl = sign_link(self.sign_sk, link)
        self._append(sl)
        shutil.rmtree(work)
        return Published(sl, len(hmat), len(keys), summary.file_bytes)

    # -- removals -------------------------------------------------------------------------------
    def remove(self, entry_ids: Sequence[str]) -> int:
        """Mark entries removed (they stop counting towards reports at once; their keys leave
        the table at the next :meth:`rotate`). Returns how many were found."""
        lst = self.entries()
        hit = np.isin(lst["ids"], np.asarray(list(entry_ids), dtype=str)) & ~lst["removed"]
        lst["removed"] |= hit
        self._save_list(lst["hashes"], lst["ids"], lst["version"], lst["removed"])
        return int(hit.sum())

    def rotate(self, *, seed: bytes | None = None, mapper: Mapper | None = None,
               workers: int = 1, progress: Progress | None = None) -> Published:
        """A new epoch: new blinding scalar, base chunk of every entry not removed (deltas
        merged in). Devices fetch the new base; vouchers made for the old epoch are still
        taken during the grace period the server chooses (``server.PsiServer``)."""
        old = self.params()
        epoch = self.epoch + 1
        sfile = self.secret_dir / f"epoch-{epoch:04d}.json"
        if not sfile.exists():
            drawn = _seeded_secrets(seed, epoch) if seed is not None else {
                "alpha": sodium.random_scalar(), "fill_key": sodium.random_bytes(32)}
            private_write(sfile, json.dumps({k: v.hex() for k, v in drawn.items()}).encode())
        sec = self.epoch_secret(epoch)
        params = Params(old.key_design, sodium.scalar_mult_base(sec["alpha"]), epoch=epoch,
                        threshold=old.threshold, dhf_dim=old.dhf_dim,
                        synthetic_rate=old.synthetic_rate, synthetic_max=old.synthetic_max,
                        synthetic_open=list(old.synthetic_open), chunk_slots=old.chunk_slots,
                        delta_openings=old.delta_openings, list_label=old.list_label)
        lst = self.entries()
        hmat = lst["hashes"][~lst["removed"]]
        if len(hmat) == 0:
            raise BuildError("every entry is removed")
        work = self.out / WORK
        work.mkdir(mode=0o700, exist_ok=True)
        state = _State(work, {"op": "rotate", "epoch": epoch, "n": len(hmat)})
        keys = self._keys(hmat, params.key_design, work, state, mapper, workers, progress)
        (self.out / params_name(epoch)).write_bytes(params.to_json())
        summary = build_chunk(keys, self.out / chunk_name(epoch, 0), alpha=sec["alpha"],
                              fill_key=sec["fill_key"], epoch=epoch, index=0,
                              params_digest=params.digest, work=work / "chunk", mapper=mapper,
                              workers=workers, progress=progress)
        head = self.head
        link = Link(head.version + 1, epoch, "base", head.head, params.digest, 0,
                    bytes.fromhex(summary.digest), summary.file_bytes, (0,), len(hmat))
        save_npy(self.secret_dir / f"keys-e{epoch:04d}-c0000.npy", keys)
        sl = sign_link(self.sign_sk, link)
        self._append(sl)
        shutil.rmtree(work)
        return Published(sl, len(hmat), len(keys), summary.file_bytes)

    def cosign(self, witnesses: Sequence[Witness]) -> SignedLink:
        """Have each witness cosign the head (in a deployment each runs elsewhere and fetches
        the chain itself); the cosignatures are stored with the links. Each witness is shown
        the whole chain in order (:meth:`Witness.cosign` re-checks versions it already
        cosigned against its log and verifies the others as extensions), so one that missed
        versions, or joins late, catches up, and it still refuses a chain that does not extend
        its log (ChainRejected) or a second head of any version it cosigned (ForkDetected)."""
        for w in witnesses:
            for sl in self.links:
                w.cosign(sl)
        save_chain(self.out, self.links)
        return self.links[-1]

    # -- helpers -------------------------------------------------------------------------------
    def _keys(self, hmat: np.ndarray, design: KeyDesign, work: Path, state: _State,
              mapper: Mapper | None, workers: int, progress: Progress | None) -> np.ndarray:
        path = work / "keys.npy"
        if state.get("keys_done"):
            return np.load(path)
        run = mapper or local_mapper(workers)
        d = design.to_dict()
        starts = range(0, len(hmat), HASH_CHUNK)
        parts, done = [], 0
        for res in run(_keys_job, ((hmat[i : i + HASH_CHUNK].tobytes(), d) for i in starts)):
            parts.append(np.frombuffer(res, np.uint8).reshape(-1, 16))
            done = min(len(hmat), done + HASH_CHUNK)
            if progress:
                progress("keys", done, len(hmat))
        keys = np.concatenate(parts) if parts else np.zeros((0, 16), np.uint8)
        keys = keys[unique_rows(keys)]  # near-duplicate entries share keys: each key once
        save_npy(path, keys)
        state.save(keys_done=True)
        return keys

    def _epoch_keys(self, epoch: int) -> np.ndarray:
        parts = [np.load(p) for p in sorted(self.secret_dir.glob(f"keys-e{epoch:04d}-c*.npy"))
                 if int(p.stem.split("-c")[1]) in self.head.live]
        return np.concatenate(parts) if parts else np.zeros((0, 16), np.uint8)

    def _save_list(self, hashes: np.ndarray, ids: np.ndarray, version: np.ndarray,
                   removed: np.ndarray) -> None:
        tmp = self.secret_dir / "list.tmp.npz"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, hashes=hashes, ids=np.asarray(ids, dtype=str), version=version,
                     removed=removed)
        os.replace(tmp, self.secret_dir / "list.npz")

    def _append(self, sl: SignedLink) -> None:
        self.links.append(sl)
        save_chain(self.out, self.links)
        log.info("published version %d (%s, epoch %d)", sl.link.version, sl.link.kind,
                 sl.link.epoch)


def _isin_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Which rows of a (n, w) uint8 are rows of b (n', w)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(a), dtype=bool)
    w = f"V{a.shape[1]}"
    va = np.ascontiguousarray(a).view(w).ravel()
    vb = np.sort(np.ascontiguousarray(b).view(w).ravel())
    i = np.searchsorted(vb, va)
    i[i == len(vb)] = 0
    return vb[i] == va


class _State:
    """The saved progress of one operation in the work folder (refuses another's)."""

    def __init__(self, work: Path, settings: dict) -> None:
        self.path = work / "state.json"
        self.settings = settings
        self.d: dict = json.loads(self.path.read_text()) if self.path.exists() else {}
        if self.d and self.d.get("settings") != settings:
            raise BuildError(f"{work} holds an unfinished build of another list or with other "
                             "settings; finish it, or remove the folder to start over")

    def get(self, k: str, default: object = None) -> object:
        return self.d.get(k, default)

    def save(self, **kw: object) -> None:
        self.d.update(kw, settings=self.settings)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.d))
        os.replace(tmp, self.path)
