"""The demo job: a known list from the bundled Kodak images, an "evidence" folder of edited
copies and unrelated pictures, matched, with a summary of what was found.

Runs on a fresh machine with nothing but the package: SQLite, in-process index.
"""

from __future__ import annotations

import json
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
    return result
