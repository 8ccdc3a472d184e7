"""Private matching (threshold vouchers): the default design, measured with real cryptography.

Prints, in one run, hashwatch beside its anchor:

* ``crypto``: client CPU per image, decoded pixels -> voucher (anchor: plain PDQ of the same
  pixels, what a non-private client computes), split into views / keys / cryptography, with
  one chunk live and with the most chunks an epoch allows; bytes per voucher (anchor: a 32-byte
  PDQ in the clear, and the 10,076-byte voucher of the previous design); server CPU per
  voucher (anchor: the brief's HMA radius-31 query at 20M, ~35 ms, not re-measured);
* ``recall``: end to end through real vouchers and the real server (a voucher opens AND the
  server's PDQ check of the revealed views passes), per edit, on corpus images the key design
  was not calibrated on;
* ``recheck``: the server's PDQ check of the revealed views when an account crosses the
  threshold, through hashwatch.index at list scale (anchor: the brute-force scan);
* ``build``: a full table of ``--entries`` synthetic hashes, then a delta of ``--delta``
  entries on top of it: wall, CPU, peak RSS, sizes; the device's verify time for the base and
  for the delta (chain + chunk digest), and the fetch size of the delta.

    python benchmarks/private_bench.py [--entries 1000000] [--delta 250000] [--workers 2]
        [--images 24] [--skip crypto recall recheck build] [--build-dir DIR]
        [--recheck-sizes 100000 1000000 20000000]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pdqhash
from PIL import Image

from hashwatch import edits as suite
from hashwatch.private.client import ClientState, VoucherClient
from hashwatch.private.device import folder_fetch, sync
from hashwatch.private.keys import DEFAULT_DESIGN, KeyDesign
from hashwatch.private.publish import Publisher
from hashwatch.private.server import PsiServer
from hashwatch.private.views import client_views
from hashwatch.private.voucher import voucher_bytes

CORPUS = Path(os.environ.get("HASHWATCH_CORPUS",
                             Path(__file__).resolve().parents[2] / "shared" / "corpus"))
DESIGN = DEFAULT_DESIGN  # --keys-per-image replaces it for a trade-off run
OLD_VOUCHER_BYTES = 10_076  # the 8-table cuckoo design this replaces (BENCHMARKS.md)
RECALL_EDITS = ["jpeg95", "jpeg75", "jpeg50", "jpeg30", "resize0.5", "gamma2", "blur2",
                "noise0.2", "grey", "contrast", "watermark", "mirror", "flip", "rot90", "rot180",
                "rot270", "pad0.2", "border-black5", "border-white10", "border-colour25",
                "border-frame", "letterbox16:9", "letterbox9:16", "crop0.05", "crop10c"]


def peak_rss_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, kids


def cpu_all() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def section(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def _rand_entries(n: int, seed: int, prefix: str):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    step = 100_000
    for start in range(0, n, step):
        block = rng.integers(0, 256, size=(min(step, n - start), 32), dtype=np.uint8)
        for i, row in enumerate(block):
            yield f"{prefix}{start + i}", row.tobytes().hex()


# --- client / voucher / server ----------------------------------------------------------------

def crypto(tmp: Path, threshold: int) -> None:
    files = sorted((CORPUS / "kodak24").glob("*.png"))
    ims = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    known = [(f.name, client_views(im)[0].pdq.hex()) for f, im in zip(files, ims, strict=True)]
    pub = Publisher.create(tmp / "t", lambda: known[: len(files) // 2] + list(
        _rand_entries(20_000, 5, "f")), design=DESIGN, threshold=threshold)
    t = time.process_time()
    for im in ims:
        pdqhash.compute(im)
    t_pdq = (time.process_time() - t) / len(ims)
    p = pub.params()
    print(f"design: {DESIGN.tables} key per list entry, {DESIGN.bits} bits, "
          f"{p.key_design.keys_per_image} keys per image, {p.chunk_slots} chunk slots, "
          f"{p.delta_openings} delta openings")

    def client_cpu(label: str, delta_openings: int | None = None) -> list[bytes]:
        table = pub.table()
        if delta_openings is not None:  # what another signed setting would cost the device
            table = dataclasses.replace(table, params=dataclasses.replace(
                table.params, delta_openings=delta_openings))
        client = VoucherClient(table, ClientState.new())
        client.state.synthetic_sent = 10**9  # time real vouchers only
        parts: dict[str, float] = defaultdict(float)
        vouchers = []
        for im in ims:
            t0 = time.process_time()
            views = client_views(im)
            t1 = time.process_time()
            p.key_design.client_keys(views)
            t2 = time.process_time()
            vouchers.append(client.voucher_for_views(views))
            t3 = time.process_time()
            parts["views"] += t1 - t0
            parts["keys"] += t2 - t1
            parts["voucher (keys + crypto)"] += t3 - t2
        n = len(ims)
        total = (parts["views"] + parts["voucher (keys + crypto)"]) / n
        print(f"client CPU per image, {label}: {total * 1000:.1f} ms "
              f"(views {parts['views'] / n * 1000:.1f}, keys {parts['keys'] / n * 1000:.1f}, "
              f"crypto {(parts['voucher (keys + crypto)'] - parts['keys']) / n * 1000:.1f})   "
              f"anchor plain PDQ: {t_pdq * 1000:.1f} ms   ratio {total / t_pdq:.1f}x   "
              f"(images {ims[0].shape[1]}x{ims[0].shape[0]}, n={n})", flush=True)
        return vouchers

    vouchers = client_cpu("1 chunk live (after a rotation)")
    vb = voucher_bytes(p)
    assert {len(v) for v in vouchers} == {vb}
    print(f"bytes per voucher: {vb:,}   anchor PDQ in the clear: 32 (ratio {vb / 32:.0f}x); "
          f"previous design: {OLD_VOUCHER_BYTES:,} (ratio {vb / OLD_VOUCHER_BYTES:.2f})")
    server = PsiServer.open(tmp / "t")
    times: dict[str, list[float]] = defaultdict(list)
    for v in vouchers:
        t0 = time.process_time()
        r = server.ingest("bench", v)
        key = "opened, crossing the threshold (detection + recovery + verification)" \
            if r.threshold_crossed else r.status
        times[key].append(time.process_time() - t0)
    for status, ts in sorted(times.items()):
        print(f"server CPU per voucher ({status}): {np.mean(ts) * 1000:.2f} ms (n={len(ts)})"
              f"   anchor HMA radius-31 query at 20M (brief): ~35 ms")
    for i in range(p.chunk_slots - 1):
        pub.add_delta(list(_rand_entries(2000, 50 + i, f"d{i}-")))
    live = f"{p.chunk_slots} chunks live (base + {p.chunk_slots - 1} deltas)"
    client_cpu(f"{live}, {p.delta_openings} delta openings")
    k = p.key_design.keys_per_image
    client_cpu(f"{live}, every key opens every delta ({k * (p.chunk_slots - 1)} openings)",
               delta_openings=k * (p.chunk_slots - 1))


# --- recall through real vouchers -----------------------------------------------------------

def recall(tmp: Path, images: int, listed_in: str) -> None:
    files = sorted((CORPUS / "bsds500-train").glob("*.jpg"))[:images]
    ims = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    known = [(f.name, pdqhash.compute(im)[0]) for f, im in zip(files, ims, strict=True)]
    known = [(n, np.packbits(b).tobytes().hex()) for n, b in known]
    filler = list(_rand_entries(5000, 6, "f"))
    if listed_in == "base":
        pub = Publisher.create(tmp / "r", lambda: known + filler, design=DESIGN, threshold=2)
    else:  # the pictures were listed by a monthly delta: probed with the delta openings only
        pub = Publisher.create(tmp / "r", lambda: filler, design=DESIGN, threshold=2)
        pub.add_delta(known)
    table = pub.table()
    print(f"listed pictures in the {listed_in} chunk; live chunks {len(table.chunks)}, "
          f"{table.params.key_design.keys_per_image} keys per image, "
          f"{table.params.delta_openings} delta openings")
    rows = []
    n_open: dict[int, int] = defaultdict(int)
    for e in RECALL_EDITS:
        opened = verified = 0
        for i, im in enumerate(ims):
            server = PsiServer.open(tmp / "r")  # a fresh account state per copy
            client = VoucherClient(table, ClientState.new())
            client.state.synthetic_sent = 10**9
            edited = suite.apply_edit(e, im, seed=0)
            v = client.voucher_for_pixels(edited)
            if server.ingest("a", v).status != "opened":
                continue
            opened += 1
            n_open[server.account_view("a")["opened"][0]["keys_opened"]] += 1
            # past the threshold the server checks the revealed views against the list
            server.ingest("a", client.voucher_for_pixels(ims[(i + 1) % len(ims)]))
            rev = server.account_view("a")["revealed"]
            verified += any(x["image_id"] and any(m[0] == known[i][0] for m in
                                                  x["list_matches"]) for x in rev)
        rows.append((e, opened / len(ims), verified / len(ims)))
        print(f"{e:16s} voucher opens {opened / len(ims):.3f}   end to end (opens and "
              f"verifies) {verified / len(ims):.3f}", flush=True)
    for fam, names in (("11 PDQ-survivable edits", RECALL_EDITS[:11]),
                       ("5 orientation edits", RECALL_EDITS[11:16]),
                       ("7 border edits", RECALL_EDITS[16:23])):
        fr = [r for r in rows if r[0] in names]
        print(f"mean over the {fam}: voucher opens {np.mean([r[1] for r in fr]):.3f}, end to "
              f"end {np.mean([r[2] for r in fr]):.3f} (n={len(ims)} images)")
    total = sum(n_open.values())
    print("keys opened per matching voucher (the synthetic_open distribution): "
          + ", ".join(f"{k}: {v / total:.3f}" for k, v in sorted(n_open.items())))


# --- the server's check after the threshold, at list scale -----------------------------------

def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _watch_rss(stop, peak: list[float]) -> None:  # type: ignore[no-untyped-def]
    """This process's peak RSS while ``stop`` is not set, sampled every 50 ms."""
    while not stop.wait(0.05):
        peak[0] = max(peak[0], _rss())


def recheck(sizes: list[int], threshold: int) -> None:
    """The PDQ check of the revealed views when an account crosses the threshold: ``threshold``
    payloads of 16 views each against a list of n entries, through hashwatch.index (what the
    server uses) and by the brute-force scan it replaced (anchor; one payload only above 1M,
    where a whole crossing would take minutes). Synthetic list: uniformly random hashes, plus
    each payload's listed picture; the views are that picture with 0-24 bits flipped."""
    import threading

    from hashwatch.private.server import ListSecret, brute_force_verifier, index_verifier

    rng = np.random.default_rng(17)
    for n in sizes:
        hashes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
        ids = np.arange(n).astype(str)
        lst = ListSecret(hashes, ids)
        payloads = []
        for _ in range(threshold):
            row = int(rng.integers(0, n))
            views = []
            for j in range(16):
                bits = np.unpackbits(hashes[row])
                bits[rng.choice(256, int(rng.integers(0, 25)), replace=False)] ^= 1
                views.append((f"v{j}", np.packbits(bits).tobytes().hex()))
            payloads.append((row, views))
        peak = [0.0]
        stop = threading.Event()
        rss0 = _rss()
        th = threading.Thread(target=_watch_rss, args=(stop, peak), daemon=True)
        th.start()
        verify = index_verifier(lst)
        t0, c0 = time.perf_counter(), time.process_time()
        verify(payloads[0][1][:1])  # builds the index
        build_wall, build_cpu = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        found = sum(any(m[0] == str(row) for m in verify(views)) for row, views in payloads)
        q_wall, q_cpu = time.perf_counter() - t0, time.process_time() - c0
        stop.set()
        th.join()
        print(f"list {n:>11,}: index build {build_wall:.1f} s wall / {build_cpu:.1f} s CPU "
              f"(once, at the first crossing), +{(peak[0] - rss0) / 2**20:,.0f} MiB RSS over "
              f"the list itself ({n * 32 / 2**20:,.0f} MiB); one crossing = {threshold} "
              f"payloads x 16 views: {q_wall * 1000:.1f} ms wall / {q_cpu * 1000:.1f} ms CPU, "
              f"{found}/{threshold} listed pictures found", flush=True)
        scan = brute_force_verifier(lst)
        k = threshold if n <= 1_000_000 else 1
        t0, c0 = time.perf_counter(), time.process_time()
        found_scan = sum(any(m[0] == str(row) for m in scan(views))
                         for row, views in payloads[:k])
        s_wall, s_cpu = (time.perf_counter() - t0) / k, (time.process_time() - c0) / k
        print(f"  anchor, brute-force scan: {s_cpu * 1000:,.1f} ms CPU per payload "
              f"({s_wall * 1000:,.1f} ms wall; {found_scan}/{k} found) = "
              f"{s_cpu * threshold:,.1f} s CPU per crossing; index/scan per payload "
              f"{q_cpu / threshold / s_cpu:.2g}", flush=True)
        del verify, scan, lst, hashes


# --- build, delta, device ---------------------------------------------------------------------

def build(out: Path, entries: int, delta: int, workers: int) -> None:
    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 60 or done == total:
            last[0] = now
            print(f"  [{time.strftime('%H:%M:%S')}] {stage} {done:,}/{total:,}", flush=True)

    os.system("uptime")
    srv = out / "server"
    if not (srv / "chain.json").exists():
        t0, c0 = time.perf_counter(), cpu_all()
        pub = Publisher.create(srv, lambda: _rand_entries(entries, 11, "e"),
                               design=DESIGN, fingerprint=f"synthetic:{entries}:11",
                               workers=workers, progress=progress)
        wall, cpu = time.perf_counter() - t0, cpu_all() - c0
        own, kids = peak_rss_mb()
        c = pub.table().chunks[0]
        size = c.file_bytes
        print(f"full table, {entries:,} entries: {c.geometry.n_keys:,} keys in "
              f"{c.geometry.array_length:,} cells, {size:,} B = {size / entries:.1f} B/entry "
              f"({size / 2**20:.1f} MiB); wall {wall:.0f} s with {workers} worker(s), CPU "
              f"{cpu:.0f} s ({cpu / entries * 1e3:.3f} ms per entry); peak RSS parent "
              f"{own:.0f} MB, largest worker {kids:.0f} MB", flush=True)
    pub = Publisher(srv)
    dev = out / "device"
    shutil.rmtree(dev, ignore_errors=True)
    t0 = time.perf_counter()
    table, rep = sync(dev, folder_fetch(srv), pub.sign_pk)
    print(f"device, first sync (fetch {rep.bytes_fetched / 2**20:.1f} MiB + verify chain and "
          f"chunk digests): {time.perf_counter() - t0:.1f} s wall, verify "
          f"{rep.verify_cpu_s:.2f} s CPU", flush=True)
    if pub.head.version == 0:
        t0, c0 = time.perf_counter(), cpu_all()
        res = pub.add_delta(list(_rand_entries(delta, 12, "d")), workers=workers,
                            progress=progress)
        wall, cpu = time.perf_counter() - t0, cpu_all() - c0
        print(f"delta, {delta:,} entries: {res.keys:,} keys, {res.chunk_bytes:,} B = "
              f"{res.chunk_bytes / delta:.1f} B/entry ({res.chunk_bytes / 2**20:.1f} MiB); "
              f"wall {wall:.0f} s, CPU {cpu:.0f} s ({cpu / delta * 1e3:.3f} ms per entry)",
              flush=True)
    t0 = time.perf_counter()
    table2, rep = sync(dev, folder_fetch(srv), pub.sign_pk, None, table)
    print(f"device, delta sync {table.version} -> {table2.version}: fetched "
          f"{[n for n, _ in rep.fetched]}, {rep.bytes_fetched / 2**20:.2f} MiB; "
          f"{time.perf_counter() - t0:.2f} s wall, verify {rep.verify_cpu_s:.3f} s CPU")
    # spot check from first principles: listed keys decode to alpha * H(key)
    from hashwatch.private import sodium
    from hashwatch.private.table import KEY_DOMAIN

    alpha = pub.epoch_secret()["alpha"]
    lst = pub.entries()
    rng = np.random.default_rng(3)
    found = 0
    sample = rng.choice(len(lst["hashes"]), 200, replace=False)
    for i in sample:
        key = DESIGN.entry_keys(lst["hashes"][i : i + 1])[0, 0].tobytes()
        want = sodium.scalar_mult(alpha, sodium.hash_to_point(KEY_DOMAIN, key))
        found += any(p == want for p in table2.decode(key))
    print(f"spot check: {found}/200 sampled list keys decode to their blinded point")
    # The size law: a chunk of n keys is FuseGeometry.sized(n).array_length cells of 32 B plus
    # a header; the measured chunks above must follow it, so 20M follows from it exactly.
    from hashwatch.private.fuse import CELL_BYTES, FuseGeometry

    for c in table2.chunks:
        law = FuseGeometry.sized(c.geometry.n_keys).array_length * CELL_BYTES
        print(f"chunk {c.index}: {c.geometry.n_keys:,} keys, file {c.file_bytes:,} B, cells by "
              f"the law {law:,} B (+{c.file_bytes - law} B header)")
    for n in (250_000, 1_000_000, 5_000_000, 20_000_000):
        g = FuseGeometry.sized(n)
        print(f"law at {n:>11,} keys: {g.array_length:,} cells = "
              f"{g.array_length * CELL_BYTES / 2**20:,.1f} MiB = "
              f"{g.array_length * CELL_BYTES / n:.2f} B per key")
    os.system("uptime")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--delta", type=int, default=25_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--threshold", type=int, default=10)
    ap.add_argument("--listed-in", choices=["base", "delta"], default="base",
                    help="recall: list the pictures in the base chunk or in a delta")
    ap.add_argument("--build-dir", type=Path, default=None,
                    help="where the tables are built (re-run to resume)")
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["crypto", "recall", "recheck", "build"])
    ap.add_argument("--recheck-sizes", type=int, nargs="*", default=[100_000, 1_000_000],
                    help="list sizes for the server's check after the threshold")
    ap.add_argument("--keys-per-image", type=int, default=None,
                    help="the default key design with another number of device keys")
    a = ap.parse_args()
    global DESIGN
    if a.keys_per_image:
        DESIGN = KeyDesign.from_dict({**DEFAULT_DESIGN.to_dict(),
                                      "keys_per_image": a.keys_per_image})
    if not CORPUS.is_dir():
        print(f"corpus not found at {CORPUS}", file=sys.stderr)
        return 2
    os.system("uptime")
    with tempfile.TemporaryDirectory(prefix="hw-psi-bench-") as tmp:
        if "crypto" not in a.skip:
            section("client / voucher / server CPU")
            crypto(Path(tmp), a.threshold)
        if "recall" not in a.skip:
            section("recall through real vouchers (listed = reference PDQ of the original)")
            recall(Path(tmp), a.images, a.listed_in)
        if "recheck" not in a.skip:
            section("the server's PDQ check after the threshold (index vs scan)")
            recheck(a.recheck_sizes, 30)
        if "build" not in a.skip:
            section("table build, delta, device")
            build(a.build_dir or Path(tmp) / "b", a.entries, a.delta, a.workers)
    own, kids = peak_rss_mb()
    print(f"\npeak RSS parent {own:.0f} MB, largest child {kids:.0f} MB")
    os.system("uptime")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
