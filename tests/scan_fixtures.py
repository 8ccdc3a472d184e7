"""A small known list and an evidence folder for the batch-scan tests (local and Ray).

Known: three bundled demo photographs in list ``caid`` (uk:B). Evidence: an exact copy, a
flipped copy and a reduced WebP of known images, unrelated photographs, a truncated JPEG, a
text file, and (through a list file) a folder and a missing path, which must become error
rows."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from PIL import Image, ImageOps
from typer.testing import CliRunner

from hashwatch.cli import app
from hashwatch.demo import demo_images

runner = CliRunner()


def cli(*args: str, code: int = 0) -> object:
    res = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == code, res.output + (res.stderr if res.stderr_bytes else "")
    return res


def make_scan_setup(root: Path, copies: int = 1) -> dict[str, Path]:
    """Database with the known list, an evidence folder and a manifest (shards of 3)."""
    src = demo_images()
    known = root / "known"
    known.mkdir(parents=True)
    for p in src[:3]:
        shutil.copy(p, known / p.name)
    db = root / "hw.db"
    cli("lists", "create", "caid", "--scheme", "uk", "--db", db)
    cli("lists", "add", "caid", known, "--category", "uk:B", "--db", db)
    ev = root / "evidence"
    ev.mkdir()
    for k in range(copies):
        sub = ev / f"c{k}"
        sub.mkdir()
        shutil.copy(src[2], sub / "exact.jpg")
        ImageOps.mirror(Image.open(src[0]).convert("RGB")).save(sub / "flipped.jpg", quality=90)
        im = Image.open(src[1]).convert("RGB")
        im.resize((im.width // 2, im.height // 2)).save(sub / "small.webp", quality=70)
        for p in src[4:7]:
            shutil.copy(p, sub / p.name)
        (sub / "broken.jpg").write_bytes(src[3].read_bytes()[:1500])
        (sub / "readme.txt").write_text("hello")
    os.mkfifo(root / "pipe")
    listing = root / "more.txt"
    listing.write_text("# a folder is walked (its files are listed already: kept once); a\n"
                       "# missing file and a FIFO become error rows\n"
                       "evidence/c0\nmissing/nothing.jpg\npipe\n")
    return {"root": root, "db": db, "evidence": ev, "listing": listing, "known": known}


def build_test_manifest(setup: dict[str, Path], name: str = "manifest") -> Path:
    out = setup["root"] / name
    if not (out / "manifest.json").exists():
        cli("scan", "manifest", setup["evidence"], "--from", setup["listing"], "--out", out,
            "--shard-size", "3")
    return out


def match_cli(setup: dict[str, Path], paths: list[str]) -> dict[str, dict]:
    """``hashwatch match`` on the same files: path -> its JSON record."""
    res = cli("match", *paths, "--db", setup["db"])
    return {r["path"]: r for r in map(json.loads, res.stdout.splitlines())}


def same_as_match(rows: list[dict], by_match: dict[str, dict]) -> None:
    """Every scan row carries exactly the matches and error ``hashwatch match`` reports."""
    assert len(rows) == len(by_match)
    for r in rows:
        m = by_match[r["path"]]
        assert r["error"] == m["error"], r["path"]
        got = [(x["list"], x["entry_id"], x["ref"], x["signal"], x["distance"], x["category"],
                x["exact"]) for x in r["matches"]]
        want = [(x["list"], x["entry_id"], x["ref"], x["signal"], x["distance"], x["category"],
                 x["exact"]) for x in m["matches"]]
        assert got == want, r["path"]
        routes = [x["route"] for x in r["matches"]]
        assert routes == [x.get("route") or ("exact" if x["exact"] else "full/full")
                          for x in m["matches"]]
