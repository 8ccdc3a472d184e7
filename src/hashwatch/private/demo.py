"""End-to-end demonstration: one account crosses the threshold, one does not.

The transport is a callable ``(account, [voucher bytes]) -> [result dict]`` so the in-process
server can be swapped for the HTTP service without touching the demo.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .build import build_table
from .client import ClientState, VoucherClient, pdq_with_coeffs
from .edits import apply_edit
from .server import PsiServer
from .table import PublicTable, ServerSecret

Transport = Callable[[str, list[bytes]], list[dict]]
EDIT_CYCLE = ["jpeg50", "resize0.5", "gamma2", "blur2", "noise0.2", "watermark",
              "jpeg30", "contrast"]


def generated_images(n: int, seed: int = 0, size: int = 320) -> Iterator[Image.Image]:
    """Benign synthetic pictures (gradients, shapes), for machines without the corpus."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yy, xx = np.mgrid[0:size, 0:size] / size
        base = np.stack([np.sin(xx * rng.uniform(1, 6) + rng.uniform(0, 6)) * 90 + 128
                         + yy * rng.uniform(-60, 60) for _ in range(3)], axis=2)
        im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(4, 9))):
            x0, y0 = (int(v) for v in rng.integers(0, size - 40, 2))
            w, h = (int(v) for v in rng.integers(30, size // 2, 2))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            if rng.random() < 0.5:
                d.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
            else:
                d.rectangle((x0, y0, x0 + w, y0 + h), fill=colour)
        yield im


def demo_images(corpus: Path | None, n: int) -> list[Image.Image]:
    if corpus is not None and (corpus / "kodak24").is_dir():
        files = sorted((corpus / "kodak24").glob("*.png"))[:n]
        if len(files) == n:
            return [Image.open(f).convert("RGB") for f in files]
    return list(generated_images(n))


@dataclass
class DemoSetup:
    table: PublicTable
    secret: ServerSecret
    known: list[Image.Image]
    other: list[Image.Image]


def make_setup(threshold: int = 5, corpus: Path | None = None, fillers: int = 2000,
               synthetic_rate: float = 0.15) -> DemoSetup:
    """The list: `threshold + 2` pictures plus random filler hashes standing in for a big list.
    The demo raises the synthetic rate so synthetic vouchers actually show up in a short run."""
    ims = demo_images(corpus, 2 * threshold + 6)
    known, other = ims[: threshold + 2], ims[threshold + 2 :]
    rng = np.random.default_rng()
    entries = [(f"demo-{i}", pdq_with_coeffs(np.asarray(im))[0]) for i, im in enumerate(known)]
    entries += [(f"filler-{i}", rng.bytes(32).hex()) for i in range(fillers)]
    table, secret = build_table(entries, threshold=threshold, synthetic_rate=synthetic_rate,
                                list_label="hashwatch demo list")
    return DemoSetup(table, secret, known, other)


def in_process_transport(server: PsiServer) -> Transport:
    def send(account: str, vouchers: list[bytes]) -> list[dict]:
        return [server.ingest(account, v).to_dict() for v in vouchers]

    return send


def run_demo(transport: Transport | None = None, setup: DemoSetup | None = None, *,
             threshold: int = 5, corpus: Path | None = None, fillers: int = 2000,
             out: Callable[[str], None] = print) -> dict[str, dict]:
    """Two accounts: ``alice`` shares threshold + 1 edited copies of listed pictures among
    unlisted ones, ``bob`` shares threshold - 1. Returns per-account summaries."""
    if corpus is None and os.environ.get("HASHWATCH_CORPUS"):
        corpus = Path(os.environ["HASHWATCH_CORPUS"])
    setup = setup or make_setup(threshold, corpus, fillers=fillers)
    t = setup.table.params.threshold
    server = None
    if transport is None:
        server = PsiServer(setup.table.params, setup.secret)
        transport = in_process_transport(server)
    out(f"table: {setup.table.params.n_slots:,} slots, threshold {t}, commitment "
        f"{setup.table.commitment.digest.hex()[:16]}...")
    plan = {"alice": t + 1, "bob": t - 1}
    summary: dict[str, dict] = {}
    for account, n_match in plan.items():
        client = VoucherClient(setup.table, ClientState.new(), setup.secret.sign_pk)
        listed = [apply_edit(EDIT_CYCLE[i % len(EDIT_CYCLE)], setup.known[i % len(setup.known)])
                  for i in range(n_match)]
        pictures = listed + setup.other[: len(setup.other) // 2 + (account == "bob")]
        order = np.random.default_rng().permutation(len(pictures))
        vouchers = [client.voucher_for_pixels(np.asarray(pictures[i])) for i in order]
        results = transport(account, vouchers)
        extra = 0
        # A synthetic voucher replaces the real one for its picture (as in Apple's design), so
        # alice keeps sharing further edited copies until the server sees the threshold.
        while account == "alice" and not any(r["threshold_crossed"] for r in results) \
                and extra < 3 * t:
            i = n_match + extra
            im = apply_edit(EDIT_CYCLE[i % len(EDIT_CYCLE)], setup.known[i % len(setup.known)])
            results += transport(account, [client.voucher_for_pixels(np.asarray(im))])
            extra += 1
        n_match += extra
        s = {"sent": len(results), "listed_pictures_sent": n_match,
             "synthetic_sent": client.state.synthetic_sent,
             "opened": sum(r["status"] == "opened" for r in results),
             "threshold_crossed": any(r["threshold_crossed"] for r in results),
             "report_raised": any(r["report_raised"] for r in results)}
        if server is not None:
            v = server.account_view(account)
            s["revealed"] = len(v["revealed"])
            s["verified"] = v["report"]["verified_matches"] if v["report"] else 0
        summary[account] = s
        # Every count a reader needs to reconcile the numbers: what was sent, how much of it
        # was synthetic chaff (which opens like a match), and what the server could open.
        unlisted = s["sent"] - n_match
        out(f"{account}: sent {s['sent']} vouchers = {n_match} edited copies of listed "
            f"pictures + {unlisted} unlisted pictures; {s['synthetic_sent']} of the "
            f"{s['sent']} were synthetic (sent in place of a real voucher; it opens like a "
            "match but carries no key share, so below the threshold the server cannot tell "
            "real matches from chaff)")
        out(f"  server: {s['opened']} voucher(s) opened (real matches + synthetic ones), "
            f"threshold {t}: "
            + ("THRESHOLD CROSSED, " if s["threshold_crossed"] else "below threshold, ")
            + (f"{s.get('revealed', '?')} payload(s) decrypted, " if server else "")
            + ("report raised for human review" if s["report_raised"] else "nothing decrypted"
               if not s["threshold_crossed"] else "no report"))
    return summary
