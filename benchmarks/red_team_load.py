"""The red team's hostile loads against the real service (issue 13), end to end.

Starts ``hashwatch serve --workers 2`` on loopback over a fresh SQLite database, then sends
each hostile load N at once and reports, per load: the answers, wall time, and the peak
RSS of the whole service process tree (workers and their decoding children, sampled every
50 ms) beside its RSS before. Loads (all generated here):

* ``png``: a 10,000 x 10,000 one-colour PNG (100 MP, ~290 KB): the decompression bomb.
* ``gif``: 40 frames of 4,000 x 4,000 (640 M pixel-frames, ~500 KB).
* ``video``: an H.264 MP4 of one 4,096 x 2,160 key frame and ``--frames`` predicted frames
  that repeat it (tens of KB): the frame bomb (encoding it takes minutes: cached in --work).
* ``json``: a 16 MiB ``/v1/match/hashes`` body of 490,000 tiny objects (refused by the
  1,000-hash cap after the strict JSON check); reported with the check's own CPU time.

Anchor: the figures the red team measured before the hardening (issue 13): eight 100 MP PNGs
took the workers to 3.3 GB; the 357 KB video kept a worker decoding for minutes.

    .venv/bin/python benchmarks/red_team_load.py --work /work/scratch/NAME/rt [--frames 1500]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import psutil


def _png_bomb(w: int, h: int) -> bytes:
    co = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * w)
    idat = b"".join(co.compress(row) for _ in range(h)) + co.flush()

    def chunk(t: bytes, d: bytes) -> bytes:
        return (struct.pack(">I", len(d)) + t + d
                + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _gif_bomb() -> bytes:
    import io

    from PIL import Image

    frames = [Image.new("P", (4000, 4000), i % 2) for i in range(40)]
    b = io.BytesIO()
    frames[0].save(b, "GIF", save_all=True, append_images=frames[1:], duration=10, loop=0)
    return b.getvalue()


def _video_bomb(path: Path, n: int) -> bytes:
    if not path.exists():
        import av
        import numpy as np

        c = av.open(str(path), "w")
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 4096, 2160, "yuv420p"
        s.options = {"preset": "ultrafast", "g": "100000", "keyint_min": "100000",
                     "sc_threshold": "0", "crf": "51"}
        img = np.zeros((2160, 4096, 3), np.uint8)
        img[::7, ::5] = 200
        f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        for i in range(n):
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
        c.close()
    return path.read_bytes()


def _tree_rss_mb(pid: int) -> float:
    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for q in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += q.memory_info().rss
    return total / 2**20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(work: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    db = work / "rt.db"
    for f in work.glob("rt.db*"):
        shutil.rmtree(f) if f.is_dir() else f.unlink()
    env = dict(os.environ, HASHWATCH_DB=str(db), HASHWATCH_RATE_LIMIT="0")
    exe = str(Path(sys.executable).parent / "hashwatch")
    out = subprocess.run([exe, "keys", "create", "bench", "--scopes", "hash,match"], env=env,
                         capture_output=True, text=True, check=True).stdout
    key = next(w for w in out.split() if w.startswith("hw_"))
    port = _free_port()
    proc = subprocess.Popen([exe, "serve", "--port", str(port), "--workers", "2",
                             "--log-level", "warning"], env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/v1/health/ready", timeout=5).status_code == 200:
                return proc, base, key
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.terminate()
    raise SystemExit("the service did not become ready")


def _load(proc: subprocess.Popen[bytes], base: str, key: str, label: str, path: str,
          n: int, content_type: str | None = None, **kw: object) -> None:
    before = _tree_rss_mb(proc.pid)
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss_mb(proc.pid))
            time.sleep(0.05)

    answers: list[str] = []

    def one() -> None:
        try:
            headers = {"Authorization": f"Bearer {key}"}
            if content_type:
                headers["Content-Type"] = content_type
            r = httpx.post(base + path, headers=headers, timeout=600,
                           **kw)  # type: ignore[arg-type]
            code = r.json().get("error", {}).get("code", "") if r.status_code >= 400 else ""
            h = r.json().get("hashes", {}) if r.status_code == 200 else {}
            extra = f" frames={h.get('frame_count')} limited={h.get('limited')}" \
                if h.get("frame_count") else ""
            answers.append(f"{r.status_code} {code}{extra}".strip())
        except httpx.HTTPError as exc:
            answers.append(type(exc).__name__)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.monotonic()
    workers = [threading.Thread(target=one) for _ in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.monotonic() - t0
    stop.set()
    th.join()
    ready = httpx.get(base + "/v1/health/ready", timeout=30).status_code
    print(json.dumps({"load": label, "at_once": n, "wall_s": round(wall, 1),
                      "rss_before_mb": round(before), "rss_peak_mb": round(peak[0]),
                      "answers": sorted(answers), "ready_after": ready}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="scratch folder (cached video)")
    ap.add_argument("--frames", type=int, default=1500)
    ap.add_argument("--loads", default="json,png,gif,video")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    loads = a.loads.split(",")
    print(f"load average before: {os.getloadavg()}")
    if "json" in loads:
        from hashwatch.service.guards import load_json

        one = b'{"signal_type":"md5","value":"a"}'
        n = (16 * 2**20 - 20) // (len(one) + 1)
        body = b'{"hashes":[' + b",".join([one] * n) + b"]}"
        t = time.process_time()
        load_json(body)
        print(json.dumps({"load": "json check in-process", "objects": n,
                          "cpu_s": round(time.process_time() - t, 3)}))
    proc, base, key = _serve(a.work)
    try:
        if "json" in loads:
            _load(proc, base, key, f"json 16 MiB ({n} objects)", "/v1/match/hashes", 4,
                  content_type="application/json", content=body)
        if "png" in loads:
            data = _png_bomb(10_000, 10_000)
            _load(proc, base, key, f"png 100 MP ({len(data) // 1024} KB)", "/v1/match/upload",
                  8, files={"file": ("b.png", data)})
        if "gif" in loads:
            data = _gif_bomb()
            _load(proc, base, key, f"gif 40 x 16 MP ({len(data) // 1024} KB)",
                  "/v1/match/upload", 4, files={"file": ("b.gif", data)})
        if "video" in loads:
            data = _video_bomb(a.work / f"bomb{a.frames}.mp4", a.frames)
            _load(proc, base, key, f"video 4096x2160 x {a.frames} frames "
                  f"({len(data) // 1024} KB)", "/v1/hash", 1, files={"file": ("b.mp4", data)})
            _load(proc, base, key, "video, 4 at once", "/v1/match/upload", 4,
                  files={"file": ("b.mp4", data)})
    finally:
        proc.terminate()
        proc.wait(60)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
