"""The library face: every public name exists, is documented and importable; importing the
package stays cheap; docs/api.md is current; the README's "embed hashwatch" example runs."""

from __future__ import annotations

import inspect
import io
import re
import runpy
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from PIL import Image

import hashwatch
import hashwatch.private

REPO = Path(__file__).resolve().parents[1]
DEMO = Path(hashwatch.__file__).parent / "demo_data"


def _public(module) -> list[str]:  # type: ignore[no-untyped-def]
    return [n for n in module.__all__ if n != "__version__"]


@pytest.mark.parametrize("module", [hashwatch, hashwatch.private], ids=lambda m: m.__name__)
def test_every_public_name_exists_is_documented_and_importable(module):
    names = _public(module)
    assert names and len(names) == len(set(names))
    for name in names:
        obj = getattr(module, name)
        # ``from hashwatch import X`` gives the same object as the attribute
        ns: dict = {}
        exec(f"from {module.__name__} import {name} as x", ns)
        assert ns["x"] is obj, name
        doc = obj.__doc__ or ""  # its own docstring: not inherited, not a dataclass's repr
        assert doc.strip(), f"{module.__name__}.{name} has no docstring"
        assert not doc.startswith(f"{name}("), f"{module.__name__}.{name}: generated docstring"
        if not inspect.ismodule(obj):
            # defined where the export table says, not a stale re-export
            assert obj.__module__.startswith("hashwatch."), name
    assert set(names) <= set(dir(module))
    # __all__ and the lazy export table agree (a name in one only is a broken export)
    table = set(module._EXPORTS) | set(getattr(module, "_SUBMODULES", ()))
    assert set(names) == table
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


def test_import_is_lazy():
    """``import hashwatch`` (and ``hashwatch.private``) loads nothing but themselves: the
    command line and every embedder pay the interpreter start only (typing alone would add
    ~10 ms, numpy ~100 ms)."""
    code = ("import sys; before = set(sys.modules); import hashwatch, hashwatch.private; "
            "print(','.join(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert set(out.split(",")) <= {"__future__", "hashwatch", "hashwatch.private"}, out


def test_api_page_is_current():
    gen = runpy.run_path(str(REPO / "docs" / "gen_api.py"))
    text = gen["render"]()
    assert (REPO / "docs" / "api.md").read_text(encoding="utf-8") == text, \
        "docs/api.md is stale: run python docs/gen_api.py"
    for name in _public(hashwatch):
        assert f"`hashwatch.{name}`" in text
    for name in _public(hashwatch.private):
        assert f"`hashwatch.private.{name}`" in text


def _readme_example() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- embed-example[^>]*-->\s*```python\n(.*?)```", readme, re.S)
    assert m, "README lost its embed-example block"
    return m.group(1)


def test_readme_embed_example_runs(tmp_path, monkeypatch):
    known, evidence = tmp_path / "known-images", tmp_path / "evidence"
    known.mkdir()
    evidence.mkdir()
    for name in ("kodim01.jpg", "kodim02.jpg", "kodim03.jpg"):
        shutil.copy(DEMO / name, known / name)
    # the evidence: kodim02 mirrored and re-encoded as an "upload", and an unknown picture
    Image.open(DEMO / "kodim02.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        evidence / "upload.jpg", quality=80)
    shutil.copy(DEMO / "kodim09.jpg", evidence / "holiday.jpg")
    monkeypatch.chdir(tmp_path)
    buf = io.StringIO()
    with redirect_stdout(buf):
        exec(compile(_readme_example(), "README.md", "exec"), {"__name__": "__main__"})
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("3 known images, ")
    hits = [ln for ln in lines if ln.startswith("evidence/")]
    # the mirrored upload is found (a robust route), the unknown picture is not
    assert len(hits) == 1 and hits[0].startswith("evidence/upload.jpg known kodim02.jpg uk:B")
    route = hits[0].split()[4]
    assert route != "full" and "/" in route  # "<query view>/<known view>", e.g. a flip
    assert lines[-1] == "1 match(es)"
    assert (tmp_path / "hw.db").stat().st_mode & 0o077 == 0  # the database is owner-only


def test_private_client_through_the_public_names(tmp_path):
    """The device side from ``hashwatch.private`` alone: a voucher for a table it trusts
    (loaded from the files the server publishes), and a refusal for another key's table."""
    import numpy as np

    from hashwatch.private import ClientState, PublicTable, TableRejected, VoucherClient
    from hashwatch.private.keys import DEFAULT_DESIGN  # server side: internal
    from hashwatch.private.publish import Publisher
    from hashwatch.private.server import PsiServer

    rng = np.random.default_rng(3)
    known = [(f"k{i}", rng.bytes(32).hex()) for i in range(4)]
    filler = [(f"f{i}", rng.bytes(32).hex()) for i in range(60)]
    pub = Publisher.create(tmp_path / "t", lambda: known + filler, design=DEFAULT_DESIGN,
                           threshold=2, sign_seed=b"e" * 32)
    table = PublicTable.load(tmp_path / "t", pub.sign_pk)
    state = ClientState.new()
    state.save(tmp_path / "state.json")
    client = VoucherClient(table, ClientState.load(tmp_path / "state.json"), pub.sign_pk)
    v = client.voucher_for_hash(known[0][1], quality=100, synthetic=False)
    assert isinstance(v, bytes)
    assert PsiServer.open(tmp_path / "t").ingest("acct", v).status == "opened"
    with pytest.raises(TableRejected):
        VoucherClient(table, ClientState.new(), bytes(32))
