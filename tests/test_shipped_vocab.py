"""A keypoint index built with a vocabulary shipped with hashwatch names it in its manifest
instead of keeping a 50 MB copy; one built with any other vocabulary keeps its copy; a search
of few descriptors takes more words per descriptor than one of many."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hashwatch import robust as R
from hashwatch.robust.keypoint_index import KeypointIndex, KeypointParams
from hashwatch.robust.vocab import (
    DEFAULT_VOCAB,
    SHIPPED,
    Vocabulary,
    default_vocabulary,
    shipped_vocabulary,
)


def _picture(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    return np.kron(small, np.ones((16, 16, 1), np.uint8))  # 384 x 512 blocks: corners


def test_a_shipped_vocabulary_is_named_not_copied(tmp_path) -> None:
    f = R.known_local(_picture())
    assert len(f.desc) > 20
    ix = KeypointIndex(default_vocabulary())
    ix.add(1, f)
    ix.add(2, R.known_local(_picture(3)))  # idf weights need more than one known image
    assert ix.save(tmp_path / "kp")
    man = json.loads((tmp_path / "kp" / "manifest.json").read_text())
    assert man["vocab_file"] == DEFAULT_VOCAB.name and DEFAULT_VOCAB.name in SHIPPED
    assert not (tmp_path / "kp" / "vocab.npz").exists()
    back = KeypointIndex.load(tmp_path / "kp")
    assert back.vocab.digest() == man["vocab"] == default_vocabulary().digest()
    assert [c.image_id for c in back.search(f)][0] == 1


def test_an_index_naming_a_vocabulary_this_version_lacks_is_refused(tmp_path) -> None:
    ix = KeypointIndex(default_vocabulary())
    ix.add(1, R.known_local(_picture()))
    assert ix.save(tmp_path / "kp")
    path = tmp_path / "kp" / "manifest.json"
    man = json.loads(path.read_text())
    path.write_text(json.dumps({**man, "vocab_file": "orb-vocab-99.npz"}))
    with pytest.raises(ValueError, match="not shipped"):
        KeypointIndex.load(tmp_path / "kp")
    # a shipped file of that name, but not the one the index was built with
    path.write_text(json.dumps({**man, "vocab_file": "orb-vocab-v2.npz"}))
    with pytest.raises(ValueError, match="digests differ"):
        KeypointIndex.load(tmp_path / "kp")


def test_another_vocabulary_is_kept_in_the_folder_and_replaced_by_a_name_on_rebuild(
        tmp_path) -> None:
    v2 = shipped_vocabulary("orb-vocab-v2.npz")
    own = Vocabulary(v2.coarse[:, ::-1], v2.fine[:, :, ::-1], v2.sig_bits)  # not shipped
    assert own.shipped is None and own.digest() != v2.digest()
    f = R.known_local(_picture(1))
    ix = KeypointIndex(own)
    ix.add(5, f)
    assert ix.save(tmp_path / "kp")
    man = json.loads((tmp_path / "kp" / "manifest.json").read_text())
    assert "vocab_file" not in man and (tmp_path / "kp" / "vocab.npz").exists()
    assert KeypointIndex.load(tmp_path / "kp").vocab.digest() == own.digest()
    # rebuilt over it with the default: the copy goes once the new manifest names the file
    new = KeypointIndex(default_vocabulary())
    new.add(5, f)
    assert new.save(tmp_path / "kp", replace=True)
    assert not (tmp_path / "kp" / "vocab.npz").exists()
    assert KeypointIndex.load(tmp_path / "kp").vocab.digest() == default_vocabulary().digest()


def test_a_search_of_few_descriptors_takes_more_words_each() -> None:
    p = KeypointParams()
    assert p.m_few > p.m
    ix = KeypointIndex(default_vocabulary())
    ix.add(1, R.known_local(_picture()))
    assert ix.words_per_descriptor(p.few) == p.m_few
    assert ix.words_per_descriptor(p.few + 1) == p.m
    q = R.known_local(_picture(2))
    assert 0 < len(q.desc) <= p.few
    words, _, _ = ix.query_words(q)
    assert words.shape == (len(q.desc), p.m_few)
    many = R.LocalFeatures(np.zeros((p.few + 1, 2), np.float32),
                           np.repeat(q.desc[:1], p.few + 1, axis=0), q.size, {},
                           np.zeros(p.few + 1, np.uint8), np.zeros(p.few + 1, np.uint8))
    words, _, _ = ix.query_words(many)
    assert words.shape == (p.few + 1, p.m)


def test_the_environment_chooses_the_shipped_vocabulary_of_new_indexes(monkeypatch) -> None:
    monkeypatch.setenv("HASHWATCH_KEYPOINT_VOCAB", "v2")
    assert default_vocabulary().shipped == "orb-vocab-v2.npz"
    assert default_vocabulary().n_words == 512 * 512
    monkeypatch.setenv("HASHWATCH_KEYPOINT_VOCAB", "orb-vocab-20.npz")
    assert default_vocabulary().n_words == 1 << 20
    monkeypatch.setenv("HASHWATCH_KEYPOINT_VOCAB", "v7")
    with pytest.raises(ValueError, match="'v7': not a vocabulary shipped.*short names v2, v20"):
        default_vocabulary()
    monkeypatch.delenv("HASHWATCH_KEYPOINT_VOCAB")
    assert default_vocabulary().shipped == DEFAULT_VOCAB.name


def test_the_recorded_digests_are_those_of_the_shipped_files() -> None:
    from hashwatch.robust.vocab import DATA

    assert sorted(p.name for p in DATA.glob("*.npz")) == sorted(SHIPPED)
    for name, digest in SHIPPED.items():
        assert Vocabulary.load(DATA / name).digest() == digest, name  # hashed from the file
        assert shipped_vocabulary(name).digest() == digest


def test_the_command_refuses_an_unknown_vocabulary_before_any_work(tmp_path) -> None:
    from typer.testing import CliRunner

    from hashwatch.cli import app

    db = tmp_path / "l.db"
    res = CliRunner().invoke(app, ["lists", "create", "k", "--db", str(db)],
                             env={"HASHWATCH_KEYPOINT_VOCAB": "v7"})
    assert res.exit_code == 2 and "HASHWATCH_KEYPOINT_VOCAB='v7'" in res.output
    assert "Traceback" not in res.output and not db.exists()
    res = CliRunner().invoke(app, ["lists", "create", "k", "--db", str(db)],
                             env={"HASHWATCH_KEYPOINT_VOCAB": "v2"})
    assert res.exit_code == 0, res.output
