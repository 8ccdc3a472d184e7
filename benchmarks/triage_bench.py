"""Triage benchmark: a generated evidence tree (>= 20,000 files) against a 1,000,000-entry list.

    .venv/bin/python benchmarks/triage_bench.py generate --root /work/helpers/triage/bench
    .venv/bin/python benchmarks/triage_bench.py run --root /work/helpers/triage/bench --workers 2

``generate`` builds (once) ``ROOT/evidence`` (corpus images and edited copies, 12-MP phone-size
JPEGs, PNG screenshots, short videos, non-image files, corrupt files, nested zip / tar.gz / 7z
archives), ``ROOT/known/`` (the planted "known" images' hashes), ``ROOT/truth.json`` (expected
state of every planted file) and ``ROOT/list.db`` (a store with one list of 1,000,000 entries:
synthetic random hashes plus the planted known ones).

``run`` triages the 12-MP phone folder alone (the throughput target) and then the whole tree,
against that list, on ``--workers`` processes, and prints files/s, MB/s, the split of time
between decoding, hashing, matching and writing, the correctness check (every planted known copy
in its expected state, no unrelated file reported as known) and peak RSS. The anchor is
PDQ through threatexchange on a full-resolution 12-MP JPEG (1.8 images/s per core, from the
brief): its 2-core figure (3.6 files/s) is printed beside ours.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

HERE = Path(__file__).resolve()
ANCHOR_PER_CORE = 1.8  # threatexchange PDQ on a 12-MP JPEG, images/s per core (brief)
CATS = ["uk:A", "uk:B", "uk:C", "vics:1"]


def corpus_dir() -> Path:
    return Path(os.environ.get("HASHWATCH_CORPUS", HERE.parents[2] / "shared" / "corpus"))


def _jpeg(im: Image.Image, q: int) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=q)
    return buf.getvalue()


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _edit(im: Image.Image, k: int) -> bytes:
    """Mild edits that PDQ survives: resize + re-encode, brightness, slight crop-free blur."""
    if k == 0:
        w, h = im.size
        return _jpeg(im.resize((max(8, int(w * 0.7)), max(8, int(h * 0.7))), Image.BILINEAR), 75)
    return _jpeg(ImageEnhance.Brightness(im).enhance(1.1), 85)


def _phone(im: Image.Image, rng: np.random.Generator, noise: np.ndarray) -> bytes:
    big = im.convert("RGB").resize((4032, 3024), Image.BICUBIC)
    a = np.asarray(big, dtype=np.int16)
    oy, ox = rng.integers(0, 64, size=2)
    a = np.clip(a + noise[oy : oy + 3024, ox : ox + 4032], 0, 255).astype(np.uint8)
    return _jpeg(Image.fromarray(a), 90)


def _screenshot(rng: random.Random, base_seed: int, variant: int) -> bytes:
    """A chat/settings-like screen: bars, text lines, a clock that differs per variant."""
    r = random.Random(base_seed)
    w, h = r.choice([(1280, 720), (1080, 1920), (1440, 900)])
    bg = tuple(r.randrange(200, 256) for _ in range(3))
    im = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, w, 60], fill=tuple(r.randrange(0, 120) for _ in range(3)))
    y = 90
    while y < h - 40:
        x0 = r.randrange(10, w // 3)
        bw = r.randrange(w // 5, w - x0 - 10)
        bh = r.randrange(30, 120)
        d.rounded_rectangle([x0, y, x0 + bw, y + bh], radius=12,
                            fill=tuple(r.randrange(60, 250) for _ in range(3)))
        for ly in range(y + 8, y + bh - 12, 16):
            d.text((x0 + 10, ly), "".join(r.choice("abcdefgh ijklmnop") for _ in range(bw // 8)),
                   fill=(20, 20, 20))
        y += bh + r.randrange(10, 40)
    d.text((w - 80, 20), f"{9 + variant % 12:02d}:{rng.randrange(60):02d}", fill=(255, 255, 255))
    return _png(im)


def _video(path: Path, frames: list[np.ndarray], fps: int, codec: str) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=fps)
        h, w = frames[0].shape[:2]
        s.width, s.height = w - w % 2, h - h % 2
        s.pix_fmt = "yuv420p"
        for a in frames:
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(a[: s.height, : s.width]),
                                           format="rgb24")
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def generate(root: Path, seed: int = 0, n_entries: int = 1_000_000) -> None:
    from hashwatch.hashing import hash_file
    from hashwatch.signals.pdq import hamming_hex

    corpus = corpus_dir()
    if not corpus.is_dir():
        sys.exit(f"corpus not found at {corpus} (set HASHWATCH_CORPUS)")
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    ev = root / "evidence"
    ev.mkdir(parents=True, exist_ok=True)
    for d in ev.iterdir():  # the slow 12-MP photos are kept from an earlier generation
        if d.name not in ("phone", "screens"):
            shutil.rmtree(d) if d.is_dir() else d.unlink()
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    known_src = sorted((corpus / "bsds500-train").glob("*.jpg")) + sorted(
        (corpus / "kodak24").glob("*.png"))
    unrelated = sorted((corpus / "sun-hays80").glob("*")) + sorted(
        (corpus / "bsds500-val").glob("*.jpg"))
    flowers = sorted((corpus / "flowers128").rglob("*.jpg"))
    known: list[dict] = []  # one per known image: ref, category, hashes
    truth: dict[str, dict] = {}  # planted path -> expected state and ref

    for i, p in enumerate(known_src):
        h = hash_file(p, max_side=512)
        known.append({"ref": f"K{i:04d}", "src": str(p), "category": CATS[i % len(CATS)],
                      "md5": h.md5, "sha1": h.sha1, "sha256": h.sha256, "pdq": h.pdq,
                      "pdq_quality": h.pdq_quality})

    def plant(rel: str, data: bytes, k: dict, state: str) -> None:
        _write(ev / rel, data)
        truth[rel] = {"state": state, "ref": k["ref"], "category": k["category"]}

    def plant_near(rel: str, data: bytes, k: dict) -> bool:
        """Plant an edited copy only if PDQ itself keeps it within 31 (else it is PDQ's miss,
        not triage's: counted and reported)."""
        tmp = root / "tmp.bin"
        tmp.write_bytes(data)
        h = hash_file(tmp)
        if h.pdq is None or hamming_hex(h.pdq, k["pdq"]) > 31 or (h.pdq_quality or 0) < 50:
            return False
        plant(rel, data, k, "known_near")
        return True

    dropped = 0
    # 1. exact copies of every known image, some renamed
    for i, k in enumerate(known):
        data = Path(k["src"]).read_bytes()
        name = f"photos/known_exact/DSC_{i:05d}{Path(k['src']).suffix}"
        plant(name, data, k, "known_exact")
    log("known exact copies")
    # 2. two edited copies of each; every 10th renamed .txt (found by magic, not extension)
    for i, k in enumerate(known):
        im = Image.open(k["src"]).convert("RGB")
        for e in range(2):
            ext = ".txt" if i % 10 == 0 and e == 0 else ".jpg"
            dropped += not plant_near(f"photos/known_edit/IMG_{i:05d}_{e}{ext}", _edit(im, e), k)
    log(f"edited copies ({dropped} dropped: PDQ distance > 31)")
    # 3. 12-MP phone photos: 300 of known images, 300 of unrelated ones
    noise = nrng.normal(0, 3, size=(3024 + 64, 4032 + 64, 3)).astype(np.int16)
    phone_rng = np.random.default_rng(seed + 1)
    def phone_bytes(rel: str, src: str) -> bytes:
        p = ev / rel
        return p.read_bytes() if p.exists() else _phone(Image.open(src), phone_rng, noise)

    for i in range(300):
        k = known[i % len(known)]
        data = phone_bytes(f"phone/DCIM/IMG_{i:04d}.JPG", k["src"])
        dropped += not plant_near(f"phone/DCIM/IMG_{i:04d}.JPG", data, k)
        if i % 50 == 0:
            log(f"phone known {i}")
    for i in range(300):
        src = unrelated[i % len(unrelated)]
        rel = f"phone/DCIM/IMG_{1000 + i:04d}.JPG"
        _write(ev / rel, phone_bytes(rel, str(src)))
        if i % 50 == 0:
            log(f"phone unrelated {i}")
    # 4. screenshots: 300 bases x 3 variants (clock differs) + 100 singles
    if not (ev / "screens" / "single_0099.png").exists():  # slow: kept once complete
        for b in range(300):
            for v in range(3):
                _write(ev / f"screens/Screenshot_{b:04d}_{v}.png",
                       _screenshot(rng, 10_000 + b, v))
        for b in range(100):
            _write(ev / f"screens/single_{b:04d}.png", _screenshot(rng, 20_000 + b, 0))
    log("screenshots")
    # 5. flowers and their re-encoded copies (distractors; pairs cluster)
    (ev / "flowers").mkdir()
    for f in flowers:
        name = f"{f.parent.name}_{f.name}"
        shutil.copyfile(f, ev / "flowers" / name)
        _write(ev / "flowers_small" / name, _jpeg(Image.open(f), 60))
    log("flowers")
    # 6. other corpus images (cbsd68 PNGs are pixel-identical to bsds val: clusters)
    for sub in ("sun-hays80", "bsds500-val", "cbsd68-png"):
        for f in sorted((corpus / sub).iterdir()):
            if f.is_file():
                _write(ev / "misc" / sub / f.name, f.read_bytes())
    # 7. non-image files
    words = ["evidence", "report", "meeting", "invoice", "holiday", "photo", "list", "notes",
             "draft", "final"]
    for i in range(9000):
        kind = i % 5
        if kind == 0:
            data = (" ".join(rng.choice(words) for _ in range(rng.randrange(50, 2000)))).encode()
            name = f"docs/{i // 500:02d}/note_{i}.txt"
        elif kind == 1:
            data = ("<html><body>" + " ".join(rng.choice(words) for _ in range(300))
                    + "</body></html>").encode()
            name = f"docs/{i // 500:02d}/page_{i}.html"
        elif kind == 2:
            data = b"%PDF-1.4\n" + nrng.bytes(rng.randrange(2000, 30000))
            name = f"docs/{i // 500:02d}/scan_{i}.pdf"
        elif kind == 3:
            data = b"MZ" + nrng.bytes(rng.randrange(1000, 40000))
            name = f"docs/{i // 500:02d}/lib_{i}.dll"
        else:
            data = "\n".join(f"{j},{rng.random():.5f}" for j in range(rng.randrange(10, 500))
                             ).encode()
            name = f"docs/{i // 500:02d}/data_{i}.jpg.csv"
        _write(ev / name, data)
    log("documents")
    # 8. corrupt files: truncated images (unrelated sources), expected state error
    for i in range(40):
        src = unrelated[i % len(unrelated)]
        data = _jpeg(Image.open(src), 80) if i % 2 == 0 else _png(Image.open(src))
        rel = f"corrupt/broken_{i:03d}.{'jpg' if i % 2 == 0 else 'png'}"
        _write(ev / rel, data[: len(data) // 3])
        truth[rel] = {"state": "error"}
    # 9. videos: 20 show a known image for 2 s among noise-free scenes, 20 unrelated
    vid_known: dict | None = None
    for i in range(40):
        fps = 10
        scene = np.asarray(Image.open(unrelated[(i * 7) % len(unrelated)]).convert("RGB")
                           .resize((320, 240)))
        scene2 = np.asarray(Image.open(flowers[i * 11]).convert("RGB").resize((320, 240)))
        frames = [scene] * 15 + [scene2] * 15
        k = known[(i * 3) % len(known)]
        if i < 20:
            kf = np.asarray(Image.open(k["src"]).convert("RGB").resize((320, 240)))
            frames = frames[:15] + [kf] * 20 + frames[15:]
        codec, ext = ("libx264", "mp4") if i % 2 == 0 else ("libvpx", "webm")
        rel = f"videos/clip_{i:03d}.{ext}"
        _video(ev / rel, frames, fps, codec)
        if i < 20:
            truth[rel] = {"state": "known_near", "ref": k["ref"], "category": k["category"]}
        if i == 0:
            vid_known = {"ref": "V0000", "category": "uk:B", "src": str(ev / rel)}
    assert vid_known is not None
    h = hash_file(vid_known["src"])
    vid_known.update(md5=h.md5, sha1=h.sha1, sha256=h.sha256, pdq=None)
    shutil.copyfile(vid_known["src"], ev / "videos/copy_of_clip_000.mp4")
    truth["videos/clip_000.mp4"] = {"state": "known_exact", "ref": "V0000", "category": "uk:B"}
    truth["videos/copy_of_clip_000.mp4"] = dict(truth["videos/clip_000.mp4"])
    log("videos")
    # 10. archives: 60 zips of 40 members; every 4th holds a nested zip, tar.gz and 7z
    import py7zr

    fl = list(flowers)
    for a in range(60):
        zpath = ev / "archives" / f"backup_{a:03d}.zip"
        zpath.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
            for m in range(36):
                f = fl[(a * 36 + m) % len(fl)]
                z.writestr(f"phone/{m:03d}_{f.name}", _jpeg(Image.open(f), 70))
            k = known[(a * 5) % len(known)]
            z.writestr("saved/known.jpg", Path(k["src"]).read_bytes())
            truth[f"archives/backup_{a:03d}.zip!saved/known.jpg"] = {
                "state": "known_exact", "ref": k["ref"], "category": k["category"]}
            k2 = known[(a * 5 + 1) % len(known)]
            edited = _edit(Image.open(k2["src"]).convert("RGB"), 1)
            tmp = root / "tmp.bin"
            tmp.write_bytes(edited)
            hh = hash_file(tmp)
            if hamming_hex(hh.pdq, k2["pdq"]) <= 31:
                z.writestr("saved/edit.jpg", edited)
                truth[f"archives/backup_{a:03d}.zip!saved/edit.jpg"] = {
                    "state": "known_near", "ref": k2["ref"], "category": k2["category"]}
            z.writestr("notes.txt", f"archive {a}\n" * 20)
            if a % 4 == 0:
                k3 = known[(a * 5 + 2) % len(known)]
                inner = io.BytesIO()
                with zipfile.ZipFile(inner, "w") as z2:
                    z2.writestr("deep/known.jpg", Path(k3["src"]).read_bytes())
                    z2.writestr("deep/readme.txt", "inner")
                z.writestr("inner.zip", inner.getvalue())
                truth[f"archives/backup_{a:03d}.zip!inner.zip!deep/known.jpg"] = {
                    "state": "known_exact", "ref": k3["ref"], "category": k3["category"]}
                tgz = io.BytesIO()
                with tarfile.open(fileobj=tgz, mode="w:gz") as t:
                    for j in range(3):
                        data = _jpeg(Image.open(fl[(a * 3 + j + 1000) % len(fl)]), 65)
                        ti = tarfile.TarInfo(f"t/{j}.jpg")
                        ti.size = len(data)
                        t.addfile(ti, io.BytesIO(data))
                z.writestr("more.tar.gz", tgz.getvalue())
                sz = io.BytesIO()
                with py7zr.SevenZipFile(sz, "w") as s7:
                    s7.writestr(Path(known[(a * 5 + 3) % len(known)]["src"]).read_bytes(),
                                "x/known.jpg")
                z.writestr("stuff.7z", sz.getvalue())
                k4 = known[(a * 5 + 3) % len(known)]
                truth[f"archives/backup_{a:03d}.zip!stuff.7z!x/known.jpg"] = {
                    "state": "known_exact", "ref": k4["ref"], "category": k4["category"]}
    log("archives")
    (root / "tmp.bin").unlink(missing_ok=True)
    known.append(vid_known)
    old = (root / "known.json").read_text() if (root / "known.json").exists() else None
    fd = os.open(root / "known.json", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(known, fh)
    (root / "truth.json").write_text(json.dumps({"dropped": dropped, "planted": truth}, indent=0))
    n_files = sum(1 for _ in ev.rglob("*") if _.is_file())
    log(f"evidence tree: {n_files} files on disk, {len(truth)} planted expectations")
    if old == (root / "known.json").read_text() and (root / "list.db").exists():
        log("list kept: the known hashes are unchanged")
        return
    build_list(root, known, n_entries, seed)
    log("list built")


def build_list(root: Path, known: list[dict], n_entries: int, seed: int) -> None:
    """One list of n_entries: the planted known hashes plus synthetic random ones."""
    from hashwatch.categories import parse_category
    from hashwatch.matcher import Matcher
    from hashwatch.store import EntryIn, Store

    db = root / "list.db"
    for p in root.glob("list.db*"):
        p.unlink()
    store = Store.open(db)
    store.create_list("national", source="synthetic", category_scheme="uk")
    items: list[EntryIn] = []
    for k in known:
        cat = parse_category(k["category"])
        for sig in ("md5", "sha1", "sha256", "pdq"):
            if k.get(sig):
                items.append(EntryIn(sig, k[sig], category=cat, source_ref=k["ref"],
                                     group_ref=k["sha256"]))
    rng = np.random.default_rng(seed + 7)

    def synth():
        yield from items
        left = n_entries - len(items)
        i = 0
        while left > 0:
            # synthetic "images": an MD5 and a PDQ each (random bits: never near a real hash)
            b = rng.bytes(48)
            cat = parse_category(CATS[i % len(CATS)])
            ref = f"S{i:07d}"
            yield EntryIn("md5", b[:16].hex(), category=cat, source_ref=ref, group_ref=ref)
            left -= 1
            if left > 0:
                yield EntryIn("pdq", b[16:].hex(), category=cat, source_ref=ref, group_ref=ref)
                left -= 1
            i += 1

    res = store.add_entries("national", synth(), actor="bench")
    print(f"list: {res.added} entries added", file=sys.stderr)
    Matcher(store)  # builds and persists the PDQ index once
    store.close()


def _peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


ANCHOR_TE = r"""
import json, sys, time
from pathlib import Path
from threatexchange.signal_type.pdq.signal import PdqSignal
files = json.load(sys.stdin)
t = time.perf_counter()
for f in files:
    PdqSignal.hash_from_file(Path(f))
json.dump({"elapsed": time.perf_counter() - t}, sys.stdout)
"""

ANCHOR_PLAIN = r"""
import json, sys, time
import numpy as np, pdqhash
from PIL import Image
files = json.load(sys.stdin)
t = time.perf_counter()
for f in files:
    with Image.open(f) as im:
        pdqhash.compute(np.asarray(im.convert("RGB")))
json.dump({"elapsed": time.perf_counter() - t}, sys.stdout)
"""


def anchor_rate(files: list[str], python: str | None) -> tuple[float, str]:
    """Images/s on one core of threatexchange's PDQ (full-resolution decode + pdqhash)."""
    if python and Path(python).exists():
        code, name = ANCHOR_TE, "threatexchange PdqSignal.hash_from_file"
    else:
        code, name = ANCHOR_PLAIN, "PIL full decode + pdqhash (threatexchange's steps)"
        python = sys.executable
    res = subprocess.run([python, "-c", code], input=json.dumps(files), capture_output=True,
                         text=True, check=True)
    return len(files) / json.loads(res.stdout)["elapsed"], name


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _triage(root: Path, sources: list[Path], case: str, workers: int, robust: bool = False
            ) -> dict:
    from hashwatch.store import Store
    from hashwatch.triage.run import TriageOptions, run_triage

    out = root / f"out-{case}"
    if out.exists():
        shutil.rmtree(out)
    files = [p for s in sources for p in s.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    store = Store.open(root / "list.db")
    t0 = time.perf_counter()
    c0 = time.process_time()
    summ = run_triage(TriageOptions(case, [str(s) for s in sources], out, workers=workers,
                                    robust=robust), store)
    wall = time.perf_counter() - t0
    main_cpu = time.process_time() - c0
    store.close()
    t = summ.timings
    worker_cpu = t["read"] + t["decode"] + t["hash"]
    # what the run needs from idle cores: worker CPU plus the main process's CPU
    capacity = len(files) / ((worker_cpu + main_cpu) / workers)
    return {"out": out, "disk_files": len(files), "bytes": size, "wall": wall, "summary": summ,
            "main_cpu": main_cpu, "worker_cpu": worker_cpu, "capacity": capacity}


def _split(t: dict[str, float]) -> str:
    parts = {k: t[k] for k in ("read", "decode", "hash", "match", "write")}
    total = sum(parts.values())
    return ", ".join(f"{k} {v / total:.0%}" for k, v in parts.items())


def check(out: Path, ev: Path, truth: dict) -> dict:
    import sqlite3

    conn = sqlite3.connect(out / "work.db")
    conn.row_factory = sqlite3.Row
    rows = {r["path"]: r
            for r in conn.execute("SELECT path, state, matches, categories FROM files")}
    planted = truth["planted"]
    wrong = []
    for rel, exp in planted.items():
        r = rows.get(str(ev / rel))
        if r is None:
            wrong.append((rel, "missing"))
            continue
        if r["state"] != exp["state"]:
            wrong.append((rel, f"{r['state']} != {exp['state']}"))
            continue
        if "ref" in exp:
            refs = {m["ref"] for m in json.loads(r["matches"])}
            cats = set(json.loads(r["categories"]))
            if exp["ref"] not in refs or exp["category"] not in cats:
                wrong.append((rel, f"matched {refs} {cats}, expected {exp['ref']}"))
    planted_abs = {str(ev / rel) for rel in planted}
    false_known = [p for p, r in rows.items()
                   if r["state"].startswith("known") and p not in planted_abs]
    n_known = sum(1 for e in planted.values() if e["state"].startswith("known"))
    return {"planted": len(planted), "planted_known": n_known, "wrong": wrong,
            "false_known": false_known, "rows": len(rows)}


def run(root: Path, workers: int, anchor_python: str | None) -> int:
    ev = root / "evidence"
    truth = json.loads((root / "truth.json").read_text())
    lines = []
    load_before = _uptime()
    phone = sorted(str(p) for p in (ev / "phone").rglob("*.JPG"))
    a_rate, a_name = anchor_rate(phone[:12], anchor_python)

    ph = _triage(root, [ev / "phone"], "BENCH-PHONE", workers)
    s = ph["summary"]
    ph_rate = ph["disk_files"] / ph["wall"]
    lines.append(f"Load before: `{load_before}`")
    lines.append("")
    lines.append("| run | files | MB | wall s | files/s | MB/s | anchor files/s "
                 f"({workers} cores) | ratio | CPU time split |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    lines.append(f"| 12-MP phone JPEGs (4032x3024 q90), `--no-robust` | {ph['disk_files']} | "
                 f"{ph['bytes'] / 1e6:.0f} | {ph['wall']:.1f} | {ph_rate:.1f} | "
                 f"{ph['bytes'] / 1e6 / ph['wall']:.1f} | {a_rate * workers:.1f} | "
                 f"{ph_rate / (a_rate * workers):.1f}x | {_split(s.timings)} |")
    rb = _triage(root, [ev / "phone"], "BENCH-PHONE-ROBUST", workers, robust=True)
    rb_rate = rb["disk_files"] / rb["wall"]
    lines.append(f"| 12-MP phone JPEGs, robust views (the default) | {rb['disk_files']} | "
                 f"{rb['bytes'] / 1e6:.0f} | {rb['wall']:.1f} | {rb_rate:.1f} | "
                 f"{rb['bytes'] / 1e6 / rb['wall']:.1f} | {a_rate * workers:.1f} | "
                 f"{rb_rate / (a_rate * workers):.1f}x | {_split(rb['summary'].timings)} |")
    al = _triage(root, [ev], "BENCH-ALL", workers)
    s2 = al["summary"]
    lines.append(f"| whole evidence tree, `--no-robust` | {al['disk_files']} on disk, "
                 f"{s2.files} with archive members | {al['bytes'] / 1e6:.0f} | {al['wall']:.1f} | "
                 f"{al['disk_files'] / al['wall']:.1f} ({s2.files / al['wall']:.1f} incl. "
                 f"members) | {al['bytes'] / 1e6 / al['wall']:.1f} | - | - | "
                 f"{_split(s2.timings)} |")
    load_after = _uptime()
    lines.append("")
    lines.append(f"Load after: `{load_after}`")
    lines.append(f"Anchor: {a_name}, {a_rate:.2f} images/s on one core measured on 12 of the "
                 f"phone JPEGs, times {workers} cores (perfect scaling assumed for the anchor).")
    for name, r in (("phone", ph), ("phone --robust", rb), ("all", al)):
        lines.append(f"CPU ({name}): workers {r['worker_cpu']:.1f} s "
                     f"({1000 * r['worker_cpu'] / r['disk_files']:.1f} ms per file), main process "
                     f"{r['main_cpu']:.1f} s ({1000 * r['main_cpu'] / r['disk_files']:.1f} ms per "
                     f"file): {workers} idle cores would do {r['capacity']:.0f} files/s")
        t = r["summary"].timings
        lines.append(f"Seconds ({name}): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items())
                     + f"; wall {r['wall']:.1f} (read/decode/hash are CPU seconds summed over "
                     "workers; match/write are CPU seconds of the main process; cluster/report "
                     "are wall seconds)")
    c = check(al["out"], ev, truth)
    ok = not c["wrong"] and not c["false_known"]
    lines.append("")
    lines.append(f"States (whole tree): {s2.counts}; unknown clusters: {s2.clusters}")
    lines.append(f"Correctness: {c['planted']} planted expectations ({c['planted_known']} known "
                 f"copies: exact, edited, 12-MP, in nested zip/tar.gz/7z, in videos; plus "
                 f"corrupt files), {len(c['wrong'])} wrong; {len(c['false_known'])} unrelated "
                 f"files reported as known. ({truth['dropped']} edited copies were not planted "
                 "because PDQ itself puts them over distance 31.)")
    for name, r in (("phone", ph), ("phone --robust", rb)):
        cp = check(r["out"], ev, {"planted": {k: v for k, v in truth["planted"].items()
                                              if k.startswith("phone/")}})
        lines.append(f"Correctness ({name}): {cp['planted']} planted known 12-MP copies, "
                     f"{len(cp['wrong'])} wrong, {len(cp['false_known'])} unrelated reported "
                     "as known.")
        ok = ok and not cp["wrong"] and not cp["false_known"]
    for w in c["wrong"][:20]:
        lines.append(f"  wrong: {w}")
    for p in c["false_known"][:20]:
        lines.append(f"  false known: {p}")
    lines.append(f"Peak RSS {_peak_rss_mib():.0f} MiB (largest of the main process and a worker).")
    print("\n".join(lines))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--root", type=Path, required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--entries", type=int, default=1_000_000)
    r = sub.add_parser("run")
    r.add_argument("--root", type=Path, required=True)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--anchor-python", default=None,
                   help="python of a venv with threatexchange installed (else its steps)")
    a = ap.parse_args(argv)
    if a.cmd == "generate":
        generate(a.root, a.seed, a.entries)
        return 0
    return run(a.root, a.workers, a.anchor_python)


if __name__ == "__main__":
    sys.exit(main())
