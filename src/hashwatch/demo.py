"""The demo job: a known list from the bundled Kodak images, an "evidence" folder of edited
copies and unrelated pictures, matched, with a summary of what was found.

Runs on a fresh machine with nothing but the package: SQLite, in-process index.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from hashwatch import robust
from hashwatch.categories import Category
from hashwatch.hashing import hash_file, hash_many
from hashwatch.lists import add_records
from hashwatch.matcher import Matcher
from hashwatch.store import Store

KNOWN_COUNT = 8
CATEGORIES = [Category("uk", c) for c in "ABC"]


def _caption(im: Image.Image) -> Image.Image:
    im = im.copy()
    d = ImageDraw.Draw(im)
    d.rectangle([0, im.height - 40, im.width, im.height], fill=(0, 0, 0))
    d.text((10, im.height - 32), "shared via demo-chat  #repost", fill=(255, 255, 255))
    return im


def _crop(frac: float) -> Callable[[Image.Image], Image.Image]:
    def f(im: Image.Image) -> Image.Image:
        dx, dy = int(im.width * frac / 2), int(im.height * frac / 2)
        return im.crop((dx, dy, im.width - dx, im.height - dy))

    return f


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "copy": lambda im: im,
    "jpeg-q40": lambda im: im,  # quality is applied on save
    "resize-50": lambda im: im.resize((im.width // 2, im.height // 2), Image.LANCZOS),
    "greyscale": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "brighter": lambda im: ImageEnhance.Brightness(im).enhance(1.3),
    "caption": _caption,
    "crop-10": _crop(0.10),
    "border": lambda im: ImageOps.expand(im, border=im.width // 10, fill=(255, 255, 255)),
    "mirror": ImageOps.mirror,
    "rotate-90": lambda im: im.rotate(90, expand=True),
}


@dataclass
class DemoResult:
    out_dir: Path
    db_path: Path
    results_path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    triage: Any = None  # hashwatch.triage.TriageSummary of the evidence folder

    @property
    def found(self) -> int:
        return sum(1 for r in self.rows if r["expected"] == "known" and r["matched"])

    @property
    def known_copies(self) -> int:
        return sum(1 for r in self.rows if r["expected"] == "known")

    @property
    def false_matches(self) -> int:
        return sum(1 for r in self.rows if r["expected"] != "known" and r["matched"])

    def summary(self) -> list[tuple[str, str, str, str, str]]:
        """One row per kind of evidence file: how many were recognised, and how."""
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in self.rows:
            key = r["edit"] if r["expected"] == "known" else r["expected"]
            groups.setdefault(key, []).append(r)
        out = []
        for key, rows in groups.items():
            dists = [r["distance"] for r in rows if r["matched"] and not r["exact"]]
            hows = ["exact"] if any(r["exact"] for r in rows) else []
            if any(d is not None and d < 0 for d in dists):
                hows.append("keypoints")  # the local tier: no hash distance to show
            dists = [d for d in dists if d is not None and d >= 0]
            if dists:
                lo, hi = min(dists), max(dists)
                hows.append(f"near, distance {lo}" + (f"-{hi}" if hi > lo else ""))
            cats = sorted({r["category"] for r in rows if r["category"]})
            errs = sorted({r["error"].split(":")[0] for r in rows if r["error"]})
            out.append(
                (
                    key if key in ("unrelated", "corrupt", "not an image") else f"known, {key}",
                    str(len(rows)),
                    str(sum(r["matched"] for r in rows)),
                    "; ".join(hows) or ", ".join(errs),
                    ", ".join(cats),
                )
            )
        return out


def demo_images() -> list[Path]:
    folder = resources.files("hashwatch") / "demo_data"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".jpg"))


def build_evidence(images: list[Path], evidence: Path) -> dict[str, str]:
    """Write edited copies of the known images and unrelated ones; return path → expectation."""
    evidence.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}
    for i, src in enumerate(images[:KNOWN_COUNT]):
        im = Image.open(src).convert("RGB")
        # every known image gets a few edits, so all edits appear across the set
        for name in list(EDITS)[i % 3 :: 3] + (["copy"] if i % 3 else []):
            out = evidence / f"{src.stem}-{name}.jpg"
            if name == "copy":
                shutil.copyfile(src, out)
            else:
                EDITS[name](im).save(out, quality=40 if name == "jpeg-q40" else 90)
            expected[str(out)] = "known"
    for src in images[KNOWN_COUNT:]:
        out = evidence / f"unrelated-{src.stem}.png"
        Image.open(src).convert("RGB").save(out)
        expected[str(out)] = "unrelated"
    corrupt = evidence / "corrupt.jpg"
    corrupt.write_bytes(images[0].read_bytes()[:2000])
    expected[str(corrupt)] = "corrupt"
    notes = evidence / "notes.txt"
    notes.write_text("not an image\n")
    expected[str(notes)] = "not an image"
    return expected


# Fake cameras for the demo's metadata (make, model, serial or None, software, GPS or None).
CAMERAS = [
    ("Kestrel Optics", "K-100", "KO-000123", "K-100 fw 2.4", (51.5072, -0.1276)),
    ("Marlin", "M2 Pro", "MX-55501", "M2 Pro 1.0.7", None),
    ("Pelican Mobile", "P7", None, "P7 firmware 3.1", (48.8566, 2.3522)),
]


def camera_exif(camera: tuple[Any, ...], taken: str, *, bad_gps: bool = False) -> Image.Exif:
    """EXIF written with Pillow: make, model, body serial, software, DateTimeOriginal and,
    when the camera has one, a GPS position (``bad_gps``: a malformed GPS reference, which
    triage must report as a warning, not a failure)."""
    from PIL import ExifTags

    make, model, serial, software, gps = camera
    ex = Image.Exif()
    ex[ExifTags.Base.Make] = make
    ex[ExifTags.Base.Model] = model
    ex[ExifTags.Base.Software] = software
    sub = ex.get_ifd(ExifTags.IFD.Exif)
    sub[ExifTags.Base.DateTimeOriginal] = taken
    if serial:
        sub[ExifTags.Base.BodySerialNumber] = serial
    if gps:
        g = ex.get_ifd(ExifTags.IFD.GPSInfo)

        def dms(x: float) -> tuple[float, float, float]:
            x = abs(x)
            d = int(x)
            m = int((x - d) * 60)
            return (float(d), float(m), round((x - d - m / 60) * 3600, 2))

        g[ExifTags.GPS.GPSLatitudeRef] = "X" if bad_gps else ("N" if gps[0] >= 0 else "S")
        g[ExifTags.GPS.GPSLatitude] = dms(gps[0])
        g[ExifTags.GPS.GPSLongitudeRef] = "E" if gps[1] >= 0 else "W"
        g[ExifTags.GPS.GPSLongitude] = dms(gps[1])
    return ex


def write_case_material(images: list[Path], evidence: Path) -> dict[str, Any]:
    """What a seized device also holds, for the triage part of the demo and the tests:
    pictures from three fake cameras (EXIF written with Pillow, GPS on two, one malformed),
    a near-duplicate pair of new pictures, a zip and a tar.gz whose members carry their own
    timestamps, and an MP4 with a creation time and device tags (PyAV) whose frames show a
    known picture. Returns what was written, for checks."""
    import io
    import tarfile
    import time
    import zipfile

    import av
    import numpy as np

    case = evidence / "phone"
    case.mkdir(parents=True, exist_ok=True)
    made: dict[str, Any] = {"cameras": {}, "archives": {}, "video": None}
    known, new = images[:KNOWN_COUNT], images[KNOWN_COUNT:]
    plan = [  # (source, camera, taken, file name)
        (known[0], 0, "2021:03:04 10:11:12", "IMG_0001.jpg"),  # known, Kestrel
        (new[0], 0, "2021:03:05 09:00:00", "IMG_0002.jpg"),  # new, same Kestrel: the lead
        (new[1], 0, "2021:04:01 18:30:00", "IMG_0003.jpg"),
        (new[2], 1, "2019:12:24 20:00:00", "DSC_1001.jpg"),  # new, Marlin
        (known[1], 2, "2022:07:08 12:00:00", "PXL_2001.jpg"),  # known, Pelican (GPS)
        (new[3], 2, "2022:07:09 13:14:15", "PXL_2002.jpg"),
    ]
    for src, cam, taken, name in plan:
        im = Image.open(src).convert("RGB")
        im.save(case / name, quality=88, exif=camera_exif(CAMERAS[cam], taken))
        made["cameras"][str(case / name)] = (cam, taken)
    shutil.copyfile(known[5], case / "saved.jpg")  # byte-identical: an exact match
    # a near-duplicate of a new picture (smaller re-save): a cluster of two
    im = Image.open(new[1]).convert("RGB")
    im.resize((im.width * 3 // 4, im.height * 3 // 4)).save(
        case / "IMG_0003-small.jpg", quality=80,
        exif=camera_exif(CAMERAS[0], "2021:04:01 18:31:00"))
    made["cameras"][str(case / "IMG_0003-small.jpg")] = (0, "2021:04:01 18:31:00")
    # malformed GPS: read anyway, with a warning
    im = Image.open(known[2]).convert("RGB")
    im.save(case / "PXL_2003.jpg", quality=88,
            exif=camera_exif(CAMERAS[2], "2022:07:10 08:00:00", bad_gps=True))
    made["cameras"][str(case / "PXL_2003.jpg")] = (2, "2022:07:10 08:00:00")
    made["bad_gps"] = str(case / "PXL_2003.jpg")

    # archives whose members have their own times
    def jpeg(src: Path) -> bytes:
        buf = io.BytesIO()
        Image.open(src).convert("RGB").save(buf, "JPEG", quality=85)
        return buf.getvalue()

    zpath = case / "backup.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        zi = zipfile.ZipInfo("old/holiday.jpg", date_time=(2018, 6, 1, 14, 15, 16))
        z.writestr(zi, jpeg(known[3]))
    made["archives"][f"{zpath}!old/holiday.jpg"] = "2018-06-01T14:15:16"
    tpath = case / "export.tar.gz"
    with tarfile.open(tpath, "w:gz") as t:
        data = jpeg(new[4 % len(new)])
        ti = tarfile.TarInfo("export/new.jpg")
        ti.size, ti.mtime = len(data), 1577880000  # 2020-01-01T12:00:00Z
        t.addfile(ti, io.BytesIO(data))
    made["archives"][f"{tpath}!export/new.jpg"] = "2020-01-01T12:00:00Z"

    # a video with a creation time and device tags, showing a known picture
    vpath = case / "VID_3001.mp4"
    base = np.asarray(Image.open(known[4]).convert("RGB").resize((320, 240)))
    c = av.open(str(vpath), "w", options={"movflags": "use_metadata_tags"})
    c.metadata["creation_time"] = "2023-01-02T03:04:05.000000Z"
    c.metadata["com.apple.quicktime.make"] = CAMERAS[2][0]
    c.metadata["com.apple.quicktime.model"] = CAMERAS[2][1]
    c.metadata["com.apple.quicktime.software"] = CAMERAS[2][3]
    s = c.add_stream("mpeg4", rate=5)
    s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
    rng = np.random.default_rng(0)
    for _ in range(10):
        noisy = np.clip(base.astype(np.int16) + rng.integers(-4, 5, base.shape), 0, 255)
        for pkt in s.encode(av.VideoFrame.from_ndarray(noisy.astype(np.uint8), "rgb24")):
            c.mux(pkt)
    for pkt in s.encode():
        c.mux(pkt)
    c.close()
    made["video"] = (str(vpath), "2023-01-02T03:04:05Z")
    # a file-system time a court may ask about: set the modified time of one picture
    ts = time.mktime((2021, 3, 6, 0, 0, 0, 0, 0, -1))
    os.utime(case / "IMG_0002.jpg", (ts, ts))
    return made


def run_demo(out_dir: Path, *, workers: int = 1) -> DemoResult:
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    images = demo_images()
    db_path = out_dir / "demo.db"
    result = DemoResult(out_dir, db_path, out_dir / "matches.jsonl")
    with Store.open(db_path) as store:
        store.create_list(
            "demo-known",
            source="hashwatch demo (Kodak images)",
            jurisdiction="UK",
            category_scheme="uk",
        )
        for i, img in enumerate(images[:KNOWN_COUNT]):
            rec = hash_file(img, extras=robust.known_extras)
            add_records(store, "demo-known", [rec], category=CATEGORIES[i % 3], actor="demo")
        expected = build_evidence(images, out_dir / "evidence")
        matcher = Matcher(store)
        with open(result.results_path, "w") as fh:
            recs = hash_many(sorted(expected), workers=workers, extras=matcher.query_extras())
            for res in matcher.match_records(recs):
                fh.write(json.dumps(res.as_dict()) + "\n")
                best = res.matches[0] if res.matches else None
                result.rows.append(
                    {
                        "file": Path(res.path).name,
                        "edit": Path(res.path).stem.split("-", 1)[-1],
                        "expected": expected[res.path],
                        "matched": best is not None,
                        "exact": bool(best and best.exact),
                        "distance": best.distance if best else None,
                        "ref": best.ref if best else "",
                        "category": best.category if best else "",
                        "error": res.error or "",
                    }
                )
        # the investigator's view of the same folder: triage it (archives opened, videos
        # sampled, metadata read) into a case report
        from hashwatch.triage.run import TriageOptions, run_triage

        write_case_material(images, out_dir / "evidence")
        result.triage = run_triage(TriageOptions(
            case_id="DEMO-1", sources=[str(out_dir / "evidence")], out_dir=out_dir / "case",
            workers=workers, examiner="hashwatch demo",
            notes="Demo case: benign Kodak pictures stand in for known material; the cameras, "
                  "serial numbers and places in the metadata are made up."), store)
    return result
