"""``private setup --engine ray``: the local build's own per-chunk functions as Ray tasks on
the session's local cluster give a byte-identical table for the same seed and list."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hashwatch.cli import app
from hashwatch.private.build import BuildError, build_table_files
from hashwatch.private.table import PublicTable

SEED = bytes(range(32))


def _entries(n: int, seed: int = 5) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [(f"e{i}", rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex())
            for i in range(n)]


def _build(tmp, name, **kw):
    out = tmp / name
    s = build_table_files(lambda: _entries(300), out, threshold=4, min_slots=5000, **kw)
    return out, s


def test_seeded_build_is_reproducible_and_unseeded_is_not(tmp_path):
    a, sa = _build(tmp_path, "a", seed=SEED)
    b, sb = _build(tmp_path, "b", seed=SEED, workers=2)
    c, _ = _build(tmp_path, "c")
    assert (a / "table.bin").read_bytes() == (b / "table.bin").read_bytes()
    assert (a / "commitment.json").read_bytes() == (b / "commitment.json").read_bytes()
    assert sa.sign_pk == sb.sign_pk and sa.slots > sa.keys  # empty slots hold filler points
    assert (a / "table.bin").read_bytes() != (c / "table.bin").read_bytes()
    PublicTable.load(a, bytes.fromhex(sa.sign_pk))  # a valid, signed table
    with pytest.raises(BuildError, match="32 bytes"):
        _build(tmp_path, "d", seed=b"short")


def test_ray_build_is_byte_identical_to_local(ray_cluster, tmp_path):
    from hashwatch.distributed import ray_ordered_map

    local, s1 = _build(tmp_path, "local", seed=SEED)
    on_ray, s2 = _build(tmp_path, "ray", seed=SEED, mapper=ray_ordered_map)
    for name in ("table.bin", "commitment.json"):
        assert (local / name).read_bytes() == (on_ray / name).read_bytes(), name
    a = np.load(local / "server-secret.npz")
    b = np.load(on_ray / "server-secret.npz")
    assert set(a.files) == set(b.files)
    assert all(np.array_equal(a[k], b[k]) for k in a.files)
    assert s1 == s2.__class__(**{**s2.__dict__, "out": s1.out})


def test_cli_setup_on_ray(ray_cluster, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{i},{h}\n" for i, h in _entries(200, seed=9)))
    out = tmp_path / "psi"
    # in this process, already connected to the session's cluster
    res = CliRunner().invoke(app, ["private", "setup", str(lst), "--out", str(out),
                                   "--threshold", "4", "--engine", "ray", "--address",
                                   ray_cluster.address], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "token authentication on" in res.stdout
    commitment = json.loads((out / "commitment.json").read_text())
    PublicTable.load(out, bytes.fromhex(commitment["public_key"]))
    assert oct((out / "server-secret.npz").stat().st_mode & 0o777) == "0o600"
    # the secret never appears in what the command printed
    secret = np.load(out / "server-secret.npz")
    assert secret["alpha"].tobytes().hex() not in res.output
