"""End-to-end demonstration: a device keeps its table current, one account crosses the
threshold with edited copies (a mirrored and a bordered one among them), one does not.

The custodian publishes version 0 (the base) and, during the demo, version 1 (a delta); two
witnesses cosign each head; the device fetches only what is new and verifies it. The voucher
transport is a callable ``(account, [voucher bytes]) -> [result dict]`` and the file transport
a callable ``fetch(name) -> bytes``, so the in-process server and folder can be swapped for
the HTTP service without touching the demo.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from hashwatch import edits as suite

from .chain import Link, Witness, WitnessPolicy, sign_link
from .client import ClientState, VoucherClient
from .device import Fetch, folder_fetch, sync
from .keys import DEFAULT_DESIGN
from .publish import Publisher
from .server import PsiServer
from .table import TableRejected
from .views import client_views

Transport = Callable[[str, list[bytes]], list[dict]]
# Alice's copies of listed pictures: a mirrored and a bordered one first, then common edits.
EDIT_CYCLE = ["mirror", "border-white10", "jpeg50", "rot90", "grey", "blur2", "jpeg30",
              "letterbox16:9"]


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
    # generated pictures flat enough for PDQ to discard (quality < 50) are skipped
    out = []
    for im in generated_images(4 * n):
        if client_views(np.asarray(im)):
            out.append(im)
            if len(out) == n:
                break
    return out


def apply_edit(name: str, im: Image.Image) -> Image.Image:
    return Image.fromarray(suite.apply_edit(name, np.asarray(im.convert("RGB")), seed=0))


def _pdq_hex(im: Image.Image) -> str:
    return client_views(np.asarray(im))[0].pdq.hex()


@dataclass
class DemoSetup:
    folder: Path  # the custodian's table directory (public files + secret/)
    publisher: Publisher
    witnesses: list[Witness]
    known: list[Image.Image]  # listed in version 0
    added: list[Image.Image]  # listed by the delta (version 1)
    other: list[Image.Image]  # never listed
    delta: list[tuple[str, str]]  # the entries version 1 adds

    @property
    def policy(self) -> WitnessPolicy:
        return WitnessPolicy(tuple(w.pk for w in self.witnesses), len(self.witnesses))


def make_setup(folder: Path, threshold: int = 5, corpus: Path | None = None,
               fillers: int = 2000, synthetic_rate: float = 0.15) -> DemoSetup:
    """Version 0: ``threshold + 1`` pictures plus random filler hashes standing in for a big
    list, cosigned by two witnesses. The delta (2 more pictures + fillers) is published during
    the demo. The demo raises the synthetic rate so synthetic vouchers show up in a short run."""
    ims = demo_images(corpus, 2 * threshold + 8)
    known, added = ims[: threshold + 1], ims[threshold + 1 : threshold + 3]
    other = ims[threshold + 3 :]
    rng = np.random.default_rng()
    entries = [(f"demo-{i}", _pdq_hex(im)) for i, im in enumerate(known)]
    entries += [(f"filler-{i}", rng.bytes(32).hex()) for i in range(fillers)]
    delta = [(f"demo-new-{i}", _pdq_hex(im)) for i, im in enumerate(added)]
    delta += [(f"filler-new-{i}", rng.bytes(32).hex()) for i in range(fillers // 4)]
    pub = Publisher.create(folder, lambda: entries, design=DEFAULT_DESIGN, threshold=threshold,
                           synthetic_rate=synthetic_rate, list_label="hashwatch demo list")
    wdir = folder.parent / "witnesses"
    wdir.mkdir(exist_ok=True)
    witnesses = [Witness.generate(wdir / f"witness-{i}.json", pub.sign_pk) for i in range(2)]
    pub.cosign(witnesses)
    return DemoSetup(folder, pub, witnesses, known, added, other, delta)


def in_process_transport(folder: Path) -> Transport:
    server = PsiServer.open(folder)

    def send(account: str, vouchers: list[bytes]) -> list[dict]:
        server.reload_if_changed()
        return [server.ingest(account, v).to_dict() for v in vouchers]

    send.server = server  # type: ignore[attr-defined]
    return send


def run_demo(tmp: Path, setup: DemoSetup | None = None, *, transport: Transport | None = None,
             fetch: Fetch | None = None, threshold: int = 5, corpus: Path | None = None,
             out: Callable[[str], None] = print) -> dict[str, dict]:
    """The demo in ``tmp`` (see the module docstring). Returns per-actor summaries."""
    if corpus is None and os.environ.get("HASHWATCH_CORPUS"):
        corpus = Path(os.environ["HASHWATCH_CORPUS"])
    setup = setup or make_setup(tmp / "private", threshold, corpus)
    pub = setup.publisher
    fetch = fetch or folder_fetch(setup.folder)
    transport = transport or in_process_transport(setup.folder)
    summary: dict[str, dict] = {}

    # -- the device: version N, then the custodian publishes N+1, the device fetches the delta
    device_dir = tmp / "device"
    table, rep = sync(device_dir, fetch, pub.sign_pk, setup.policy)
    p = table.params
    out(f"device: table version {table.version} verified (chain signed by the pinned server "
        f"key, cosigned by {len(setup.witnesses)} of {len(setup.witnesses)} witnesses): "
        f"{table.entries:,} keys, {rep.bytes_fetched / 2**20:.2f} MiB fetched, threshold "
        f"{p.threshold}, {p.key_design.keys_per_image} keys per image")
    res = pub.add_delta(setup.delta)
    pub.cosign(setup.witnesses)
    out(f"custodian: version {res.version} = delta of {res.entries:,} new entries "
        f"({res.chunk_bytes / 2**10:.0f} KiB), cosigned by the witnesses")
    before, old = table.version, table
    table, rep = sync(device_dir, fetch, pub.sign_pk, setup.policy, table)
    out(f"device: version {before} -> {table.version}: fetched {len(rep.fetched)} file(s), "
        f"{rep.bytes_fetched / 2**10:.0f} KiB (the new chunk and the chain, nothing it "
        f"already had), verified in {rep.verify_cpu_s * 1000:.0f} ms CPU; live chunks "
        f"{[c.index for c in table.chunks]}")
    forked = _targeted_delta(setup, old)
    out(f"custodian (misbehaving): another version {before + 1}, signed for one device only "
        "-> " + forked)
    summary["device"] = {"updated": table.version == before + 1, "from": before,
                         "to": table.version, "bytes_fetched": rep.bytes_fetched,
                         "fork_refused": forked.startswith("refused")}

    # -- two accounts: alice crosses the threshold, bob does not
    t = p.threshold
    listed = setup.known + setup.added
    plan = {"alice": t + 1, "bob": t - 1}
    for account, n_match in plan.items():
        client = VoucherClient(table, ClientState.new())
        edits = [EDIT_CYCLE[i % len(EDIT_CYCLE)] for i in range(n_match)]
        copies = [apply_edit(e, listed[-1 - i if i < len(setup.added) else i])
                  for i, e in enumerate(edits)]
        pictures = copies + setup.other[: len(setup.other) // 2 + (account == "bob")]
        order = np.random.default_rng().permutation(len(pictures))
        vouchers = [client.voucher_for_pixels(np.asarray(pictures[i])) for i in order]
        results = transport(account, vouchers)
        extra = 0
        # A synthetic voucher replaces the real one for its picture (as in Apple's design), so
        # alice keeps sharing further edited copies until the server sees the threshold.
        while account == "alice" and not any(r["threshold_crossed"] for r in results) \
                and extra < 3 * t:
            i = n_match + extra
            edits.append(EDIT_CYCLE[i % len(EDIT_CYCLE)])
            results += _share(transport, account, client, edits[-1], listed[i % len(listed)])
            extra += 1
        # A synthetic voucher can also have stood in for the mirrored or the bordered copy:
        # once the threshold is crossed every real voucher is verified at once, so alice
        # shares one more such copy (of another listed picture) until each kind is verified.
        server = getattr(transport, "server", None)
        for _ in range(6):
            if account != "alice":
                break
            views = [i["view"] for i in (_latest_report(server, account, results) or {}).get(
                "items", [])]
            missing = [e for e, seen in (("mirror", any("flip" in v for v in views)),
                                         ("border-white10", any(v.startswith("trim")
                                                                for v in views))) if not seen]
            if not missing:
                break
            i = n_match + extra
            edits.append(missing[0])
            results += _share(transport, account, client, edits[-1], listed[i % len(listed)])
            extra += 1
        n_match += extra
        s = {"sent": len(results), "listed_pictures_sent": n_match, "edits": dict(Counter(edits)),
             "synthetic_sent": client.state.synthetic_sent,
             "opened": sum(r["status"] == "opened" for r in results),
             "threshold_crossed": any(r["threshold_crossed"] for r in results),
             "report_raised": any(r["report_raised"] for r in results)}
        report = next((r.get("report") for r in reversed(results) if r.get("report")), None)
        server = getattr(transport, "server", None)
        if server is not None:
            report = server.account_view(account)["report"]
        if report:
            s["verified"] = report["verified_matches"]
            s["verified_views"] = dict(Counter(i["view"] for i in report["items"]))
        summary[account] = s
        # Every count a reader needs to reconcile the numbers: what was sent, how much of it
        # was synthetic chaff (which opens like a match), and what the server could open.
        unlisted = s["sent"] - n_match
        out(f"{account}: sent {s['sent']} vouchers = {n_match} edited copies of listed "
            f"pictures + {unlisted} unlisted pictures; {s['synthetic_sent']} of the "
            f"{s['sent']} were synthetic (sent in place of a real voucher; it opens like a "
            "match but carries no key share, so below the threshold the server cannot tell "
            "real matches from chaff); the copies: "
            + ", ".join(f"{k} x{v}" for k, v in s["edits"].items()))
        out(f"  server: {s['opened']} voucher(s) opened (real matches + synthetic ones), "
            f"threshold {t}: "
            + ("THRESHOLD CROSSED, " if s["threshold_crossed"] else "below threshold, ")
            + (f"report raised for human review: {s['verified']} payloads verified within "
               f"PDQ distance 31, by view {s['verified_views']}" if report
               else "nothing decrypted" if not s["threshold_crossed"] else "no report"))
    return summary


def _share(transport: Transport, account: str, client: VoucherClient, edit: str,
           picture: Image.Image) -> list[dict]:
    """The account shares one more edited copy of a listed picture: the server's answer."""
    return transport(account, [client.voucher_for_pixels(np.asarray(apply_edit(edit, picture)))])


def _latest_report(server: Any, account: str, results: list[dict]) -> dict | None:
    """The account's report: from the server when the demo holds it, else the newest one a
    result carried (the HTTP transport)."""
    if server is not None:
        return server.account_view(account)["report"]
    return next((r.get("report") for r in reversed(results) if r.get("report")), None)


def _targeted_delta(setup: DemoSetup, table) -> str:  # type: ignore[no-untyped-def]
    """What happens when the custodian signs a second version N+1 for one device only (say,
    a delta listing a picture only that device holds): the witnesses, having cosigned the
    public N+1, refuse it; without their quorum the device refuses it too."""
    from .chain import ChainRejected

    head = table.head.link
    special = Link(head.version + 1, head.epoch, "delta", head.head, head.params_digest,
                   max(head.live) + 1, bytes(32), 0, (*head.live, max(head.live) + 1), 1)
    sl = sign_link(setup.publisher.sign_sk, special)
    refusals = 0
    for w in setup.witnesses:
        try:
            w.cosign(sl)
        except ChainRejected:
            refusals += 1
    try:
        setup.policy.check(sl)
    except ChainRejected:
        return (f"refused: {refusals} of {len(setup.witnesses)} witnesses would not cosign it "
                "and the device requires their quorum")
    return "ACCEPTED (the witnesses did not stop it)"


__all__ = ["DemoSetup", "TableRejected", "make_setup", "run_demo"]
