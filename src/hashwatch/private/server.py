"""Server side: voucher intake per account, threshold detection, recovery, verification, report.

Designed to sit behind an HTTP layer: ``ingest(account, voucher_bytes)`` returns a plain dict,
state is plain JSON-serialisable data (``state_dict`` / ``save`` / ``load``).

What the server stores per account is exactly ``OBSERVED_FIELDS`` (documented in
docs/private-matching.md); below the threshold that is counts, voucher digests and, for vouchers
that opened, uniformly random-looking share data and ciphertext.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import field, sodium
from .client import VIEW_NAMES, account_key_from_secret
from .field import ELEM_BYTES
from .table import Params
from .voucher import (
    AD_DOMAIN,
    MalformedVoucher,
    inner_key,
    key_check,
    parse,
    slot_pad,
    voucher_epoch,
    xor,
)

log = logging.getLogger(__name__)

PDQ_MATCH_DISTANCE = 31

# Every key the per-account state may hold; the test suite checks the state against this list
# and the documentation lists the same names.
OBSERVED_FIELDS = (
    "vouchers_received",  # count, including replays and malformed
    "replays",            # identical bytes seen before: ignored
    "malformed",          # wrong size/format: ignored
    "stale",              # made for an epoch the server no longer takes: ignored
    "unopened",           # count of vouchers with no opening key block
    "seen",               # digests of accepted vouchers (replay protection)
    "opened",             # per opened voucher: digest, keys opened, x, y, vector, adct
    "duplicate_shares",   # opened vouchers whose share x was already held: not counted twice
    "recovered",          # threshold crossed and account key recovered
    "account_key",        # only once recovered
    "synthetic",          # digests of opened vouchers identified synthetic (only after recovery)
    "revealed",           # decrypted payloads (only after recovery)
    "report",             # raised when >= threshold revealed payloads verify against the list
)

# (view name, PDQ hex) of a payload -> [(entry id, distance, view name)] within 31, closest first
Verifier = Callable[[list[tuple[str, str]]], list[tuple[str, int, str]]]


@dataclass
class ListSecret:
    """The server's copy of the list: PDQ hashes (n, 32) uint8 and ids of the entries that
    count (removed entries left out), for the check after the threshold."""

    hashes: np.ndarray
    ids: np.ndarray


def brute_force_verifier(lst: ListSecret) -> Verifier:
    """Exact PDQ check of each view hash against every list entry (XOR + popcount on 64-bit
    words, in chunks): the reference :func:`index_verifier` is tested against; it reads the
    whole list per check, so the server uses the index."""
    table = np.ascontiguousarray(lst.hashes).view("<u8")
    chunk = 1 << 20

    def verify(views: list[tuple[str, str]]) -> list[tuple[str, int, str]]:
        if not views or len(table) == 0:
            return []
        q = np.frombuffer(b"".join(bytes.fromhex(h) for _, h in views), "<u8").reshape(-1, 4)
        best: dict[int, tuple[int, str]] = {}
        for start in range(0, len(table), chunk):
            part = table[start : start + chunk]
            dist = np.bitwise_count(part[:, None, :] ^ q[None, :, :]).sum(axis=2)  # (n, v)
            rows, cols = np.nonzero(dist <= PDQ_MATCH_DISTANCE)
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                d = int(dist[r, c])
                if start + r not in best or d < best[start + r][0]:
                    best[start + r] = (d, views[c][0])
        out = [(str(lst.ids[i]), d, v) for i, (d, v) in best.items()]
        return sorted(out, key=lambda t: (t[1], t[0]))

    verify.builtin = True  # type: ignore[attr-defined]
    return verify


def index_verifier(lst: ListSecret) -> Verifier:
    """The check after the threshold through the project's PDQ index
    (:class:`hashwatch.index.HammingIndex`: exact multi-index hashing, radius 31): the cost of
    a check grows with the entries near the revealed views, not with the list (the brute-force
    scan above reads every entry: ~125 ms per crossing at 20,000 entries, hours at 20M). The
    index is built on the first check (a server that never sees a crossing never builds it),
    once per list (ids are the list's row numbers; removed entries are not in ``lst``); its
    build time and memory at list scale are in BENCHMARKS.md."""
    from hashwatch.index import HammingIndex

    built: list[HammingIndex] = []
    lock = threading.Lock()

    def index() -> HammingIndex:
        with lock:
            if not built:
                idx = HammingIndex(background=False)
                idx.add(np.arange(len(lst.hashes), dtype=np.int64),
                        np.ascontiguousarray(lst.hashes, dtype=np.uint8))
                built.append(idx)
            return built[0]

    def verify(views: list[tuple[str, str]]) -> list[tuple[str, int, str]]:
        if not views or len(lst.hashes) == 0:
            return []
        idx = index()
        q = np.frombuffer(b"".join(bytes.fromhex(h) for _, h in views), np.uint8)
        best: dict[int, tuple[int, str]] = {}
        for (name, _), hits in zip(views, idx.search_many(q.reshape(-1, 32),
                                                          PDQ_MATCH_DISTANCE), strict=True):
            for row, d in hits:
                if row not in best or d < best[row][0]:
                    best[row] = (d, name)
        out = [(str(lst.ids[i]), d, v) for i, (d, v) in best.items()]
        return sorted(out, key=lambda t: (t[1], t[0]))

    verify.builtin = True  # type: ignore[attr-defined]
    return verify


def _stamp(folder: Path) -> tuple:
    """Changes whenever a version is published or the list changes (removals)."""
    out = []
    for name in ("chain.json", "secret/list.npz"):
        try:
            st = (folder / name).stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def _load_dir(folder: Path, grace_epochs: int) -> tuple[dict[int, tuple[Params, bytes]],
                                                        ListSecret, tuple]:
    from .publish import Publisher

    stamp = _stamp(folder)
    pub = Publisher(folder)
    epochs = {e: (pub.params(e), pub.epoch_secret(e)["alpha"])
              for e in range(max(0, pub.epoch - grace_epochs), pub.epoch + 1)}
    entries = pub.entries()
    keep = ~entries["removed"]
    return epochs, ListSecret(entries["hashes"][keep], entries["ids"][keep]), stamp


def _new_account() -> dict:
    return {"vouchers_received": 0, "replays": 0, "malformed": 0, "stale": 0, "unopened": 0,
            "seen": [],
            "opened": [], "duplicate_shares": 0, "recovered": False, "account_key": None,
            "synthetic": [], "revealed": [], "report": None}


@dataclass
class IngestResult:
    status: str  # "replay" | "malformed" | "stale" | "unopened" | "opened" | "duplicate_share"
    threshold_crossed: bool = False
    report_raised: bool = False

    def to_dict(self) -> dict:
        return {"status": self.status, "threshold_crossed": self.threshold_crossed,
                "report_raised": self.report_raised}


class PsiServer:
    """Voucher intake for one table. ``epochs``: per accepted epoch, its parameters and
    blinding scalar (the current one, and the previous during a key-rotation grace period)."""

    def __init__(self, epochs: dict[int, tuple[Params, bytes]], lst: ListSecret, *,
                 verifier: Verifier | None = None, state_path: str | os.PathLike | None = None
                 ) -> None:
        if not epochs:
            raise ValueError("at least one epoch")
        self.epochs = dict(epochs)
        self.params = self.epochs[max(self.epochs)][0]
        self.list = lst
        self.verifier = verifier or index_verifier(lst)
        self._source: tuple[Path, int, tuple] | None = None
        self.state_path = Path(state_path) if state_path else None
        self.accounts: dict[str, dict] = {}
        self._seen: dict[str, set[str]] = {}
        # one lock for intake and saving: an HTTP layer may call from several threads
        self._lock = threading.RLock()
        if self.state_path and self.state_path.exists():
            self.accounts = json.loads(self.state_path.read_text())["accounts"]
        for a, st in self.accounts.items():
            st.setdefault("stale", 0)
            self._seen[a] = set(st["seen"])

    @classmethod
    def open(cls, table_dir: str | os.PathLike, state_path: str | os.PathLike | None = None,
             *, grace_epochs: int = 1, **kw: object) -> PsiServer:
        """The server of a table directory made by ``hashwatch private setup``: its secrets,
        the current epoch and ``grace_epochs`` before it, the list without removed entries,
        and the persisted state if any. Raises ``BuildError`` if it is no table directory."""
        epochs, lst, stamp = _load_dir(Path(table_dir), grace_epochs)
        srv = cls(epochs, lst, state_path=state_path, **kw)  # type: ignore[arg-type]
        srv._source = (Path(table_dir), grace_epochs, stamp)
        return srv

    def reload_if_changed(self) -> bool:
        """Pick up a new version (delta, removal, rotation) published in the table directory
        since :meth:`open`; account state is kept. Returns whether anything changed."""
        src = getattr(self, "_source", None)
        if src is None:
            return False
        folder, grace, stamp = src
        if _stamp(folder) == stamp:
            return False
        epochs, lst, stamp = _load_dir(folder, grace)
        with self._lock:
            self.epochs, self.list = epochs, lst
            self.params = epochs[max(epochs)][0]
            if getattr(self.verifier, "builtin", False):
                self.verifier = index_verifier(lst)
            self._source = (folder, grace, stamp)
        return True

    # -- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"version": 1, "accounts": self.accounts}

    def save(self, path: str | os.PathLike | None = None) -> None:
        p = Path(path or self.state_path or "")
        tmp = p.with_suffix(p.suffix + ".tmp")
        with self._lock:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(self.state_dict(), f)
            os.replace(tmp, p)

    def account_view(self, account: str) -> dict:
        """Everything the server holds about an account (a copy)."""
        return json.loads(json.dumps(self.accounts.get(account) or _new_account()))

    # -- intake --------------------------------------------------------------------------------
    def ingest(self, account: str, raw: bytes) -> IngestResult:
        """Take one voucher. The result is for the operator: never return it to the client."""
        with self._lock:
            return self._ingest(account, raw)

    def _ingest(self, account: str, raw: bytes) -> IngestResult:
        st = self.accounts.setdefault(account, _new_account())
        seen = self._seen.setdefault(account, set())
        st["vouchers_received"] += 1
        vid = hashlib.blake2b(raw, digest_size=16).hexdigest()
        if vid in seen:
            st["replays"] += 1
            return IngestResult("replay")
        try:
            epoch = voucher_epoch(raw)
            if epoch not in self.epochs:
                st["stale"] += 1
                return IngestResult("stale")
            params, alpha = self.epochs[epoch]
            v = parse(params, raw)
        except MalformedVoucher:
            st["malformed"] += 1
            return IngestResult("malformed")
        seen.add(vid)
        st["seen"].append(vid)
        opened = self._open(v, alpha)
        if opened is None:
            st["unopened"] += 1
            return IngestResult("unopened")
        n_open, plain = opened
        rec = self._record(vid, n_open, plain)
        if any(o["x"] == rec["x"] for o in st["opened"]):
            st["duplicate_shares"] += 1
            return IngestResult("duplicate_share")
        st["opened"].append(rec)
        crossed = False
        if st["recovered"]:
            self._reveal(st, rec)
        elif len(st["opened"]) >= self.params.threshold:
            crossed = self._try_recover(account, st)
        raised = self._maybe_report(account, st)
        return IngestResult("opened", crossed, raised)

    def _open(self, v, alpha: bytes) -> tuple[int, bytes] | None:  # type: ignore[no-untyped-def]
        vkey, n_open = None, 0
        for q, slots in v.blocks:
            try:
                shared = sodium.scalar_mult(alpha, q)
            except sodium.CryptoError:
                continue
            pad = slot_pad(shared, q, v.nonce)
            for wrapped in slots:
                cand = xor(pad, wrapped)
                if sodium.ct_equal(key_check(cand), v.check):
                    n_open += 1
                    vkey = vkey or cand
                    break
        if vkey is None:
            return None
        try:
            plain = sodium.aead_decrypt(inner_key(vkey), v.inner, v.header,
                                        nonce=bytes(sodium.AEAD_NONCE_BYTES))
        except sodium.CryptoError:
            return None
        return n_open, plain

    def _record(self, vid: str, n_open: int, plain: bytes) -> dict:
        e = ELEM_BYTES
        d = self.params.dhf_dim
        return {"voucher": vid, "keys_opened": n_open, "x": plain[:e].hex(),
                "y": plain[e : 2 * e].hex(),
                "vector": [plain[2 * e + i * e : 3 * e + i * e].hex() for i in range(d)],
                "adct": plain[(2 + d) * e :].hex()}

    # -- threshold -----------------------------------------------------------------------------
    def _try_recover(self, account: str, st: dict) -> bool:
        t = self.params.threshold
        rows = st["opened"]
        try:
            vecs = [[field.from_bytes(bytes.fromhex(h)) for h in r["vector"]] for r in rows]
        except ValueError:
            return False
        real = sorted(field.dependent_rows(vecs))
        if len(real) < t:
            return False
        pts = [(int(rows[i]["x"], 16), int(rows[i]["y"], 16)) for i in real]
        base = pts[:t]
        if any(field.interpolate_eval(base, x) != y for x, y in pts[t:]):
            log.warning("account %s: inconsistent shares, recovery refused", account)
            return False
        key = account_key_from_secret(field.interpolate_at_zero(base))
        for i in real:
            try:
                sodium.aead_decrypt(key, bytes.fromhex(rows[i]["adct"]), AD_DOMAIN)
            except sodium.CryptoError:
                log.warning("account %s: recovered key does not open a detected share", account)
                return False
        st["recovered"] = True
        st["account_key"] = key.hex()
        log.info("account %s crossed the threshold (%d real shares)", account, len(real))
        for r in rows:
            self._reveal(st, r)
        return True

    def _reveal(self, st: dict, rec: dict) -> None:
        key = bytes.fromhex(st["account_key"])
        try:
            payload = sodium.aead_decrypt(key, bytes.fromhex(rec["adct"]), AD_DOMAIN)
        except sodium.CryptoError:
            st["synthetic"].append(rec["voucher"])
            return
        image_id, mask = payload[:16].hex(), int.from_bytes(payload[16:18], "big")
        views = [(name, payload[18 + 32 * i : 50 + 32 * i].hex())
                 for i, name in enumerate(VIEW_NAMES) if mask >> i & 1]
        matches = self.verifier(views)[:5]
        full = dict(views).get("full")
        st["revealed"].append({"voucher": rec["voucher"], "pdq": full, "image_id": image_id,
                               "views": len(views),
                               "list_matches": [list(m) for m in matches]})

    def _maybe_report(self, account: str, st: dict) -> bool:
        verified = [r for r in st["revealed"] if r["list_matches"]]
        if len(verified) < self.params.threshold:
            return False
        first = st["report"] is None
        st["report"] = {"account": account, "verified_matches": len(verified),
                        "items": [{"image_id": r["image_id"], "pdq": r["pdq"],
                                   "entry_id": r["list_matches"][0][0],
                                   "distance": r["list_matches"][0][1],
                                   "view": r["list_matches"][0][2]} for r in verified],
                        "status": "pending_human_review"}
        if first:
            log.info("account %s: report raised for human review (%d verified matches)",
                     account, len(verified))
        return first

    def reports(self) -> list[dict]:
        return [st["report"] for st in self.accounts.values() if st["report"]]
