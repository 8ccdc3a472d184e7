"""``private setup --engine ray``: the local build's own per-chunk functions as Ray tasks on
the session's local cluster give a byte-identical table for the same seed and list."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from hashwatch.cli import app
from hashwatch.private.build import BuildError
from hashwatch.private.keys import DEFAULT_DESIGN
from hashwatch.private.publish import Publisher
from hashwatch.private.table import PublicTable

SEED = bytes(range(32))
FILES = ("chain.json", "params-e0000.json", "chunk-e0000-0000.bin")


def _entries(n: int, seed: int = 5) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [(f"e{i}", rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex())
            for i in range(n)]


def _build(tmp, name, **kw):
    out = tmp / name
    pub = Publisher.create(out, lambda: _entries(300), design=DEFAULT_DESIGN, threshold=4, **kw)
    return out, pub


def test_seeded_build_is_reproducible_and_unseeded_is_not(tmp_path):
    a, pa = _build(tmp_path, "a", seed=SEED)
    b, pb = _build(tmp_path, "b", seed=SEED, workers=2)
    c, _ = _build(tmp_path, "c")
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert pa.sign_pk == pb.sign_pk
    assert (a / FILES[2]).read_bytes() != (c / FILES[2]).read_bytes()
    PublicTable.open(a, pa.sign_pk)  # a valid, signed table
    with pytest.raises(BuildError, match="32 bytes"):
        _build(tmp_path, "d", seed=b"short")


def test_ray_build_is_byte_identical_to_local(ray_cluster, tmp_path):
    from hashwatch.distributed import ray_ordered_map

    local, p1 = _build(tmp_path, "local", seed=SEED)
    on_ray, p2 = _build(tmp_path, "ray", seed=SEED, mapper=ray_ordered_map)
    for name in FILES:
        assert (local / name).read_bytes() == (on_ray / name).read_bytes(), name
    for name in ("list.npz", "epoch-0000.json", "signing.json", "keys-e0000-c0000.npy"):
        assert (local / "secret" / name).read_bytes() == (on_ray / "secret" / name) \
            .read_bytes(), name


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
    pub = Publisher(out)
    PublicTable.open(out, pub.sign_pk)
    assert oct((out / "secret" / "epoch-0000.json").stat().st_mode & 0o777) == "0o600"
    # the secret never appears in what the command printed
    assert pub.epoch_secret()["alpha"].hex() not in res.output
