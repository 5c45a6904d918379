"""LM windows: content, shift, shuffling, epochs, sharding, exact resume, config errors."""

import itertools
import json

import ml_collections
import numpy as np
import pytest

from optaxlab import data
from optaxlab.data import lm

SEQ = 8


@pytest.fixture
def memmap_dir(tmp_path):
    """train.bin with 8 * 20 + 1 uint16 tokens (20 windows), val.bin with 6 windows; token
    values are their positions (+1000, so uint16 matters), which makes windows identifiable."""
    np.arange(1000, 1000 + 20 * SEQ + 1, dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.arange(5000, 5000 + 6 * SEQ + 1, dtype=np.uint16).tofile(tmp_path / "val.bin")
    return tmp_path


def _cfg(path, **kw):
    return {"name": "memmap", "path": str(path), "dtype": "uint16", **kw}


def _take(ds, n):
    return list(itertools.islice(iter(ds), n))


def _starts(batch):
    """Window ids of a batch (tokens are position + offset)."""
    first = batch["inputs"][:, 0]
    return [int(v % 1000) // SEQ for v in first]


def test_batches_shape_shift_and_content(memmap_dir):
    ds = data.lm_dataset(_cfg(memmap_dir), split="train", seq_len=SEQ, batch_size=4, seed=0)
    batch = _take(ds, 1)[0]
    assert set(batch) == {"inputs", "targets"}
    assert batch["inputs"].shape == batch["targets"].shape == (4, SEQ)
    assert batch["inputs"].dtype == batch["targets"].dtype == np.int32
    np.testing.assert_array_equal(batch["targets"], batch["inputs"] + 1)  # shifted by one
    for row in batch["inputs"]:
        assert (row[0] - 1000) % SEQ == 0  # windows start at multiples of seq_len
        np.testing.assert_array_equal(row, np.arange(row[0], row[0] + SEQ))


def test_epochs_cover_every_window_once_and_reshuffle(memmap_dir):
    ds = data.lm_dataset(_cfg(memmap_dir), split="train", seq_len=SEQ, batch_size=5, seed=3)
    batches = _take(ds, 8)  # 2 epochs of 20 windows
    epoch1 = sum((_starts(b) for b in batches[:4]), [])
    epoch2 = sum((_starts(b) for b in batches[4:]), [])
    assert sorted(epoch1) == sorted(epoch2) == list(range(20))
    assert epoch1 != epoch2 and epoch1 != list(range(20))


def test_deterministic_given_seed(memmap_dir):
    make = lambda seed: _take(data.lm_dataset(_cfg(memmap_dir), split="train", seq_len=SEQ,
                                               batch_size=4, seed=seed), 6)
    a, b, c = make(7), make(7), make(8)
    assert all(np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, c, strict=True))


def test_val_is_finite_train_is_infinite(memmap_dir):
    val = list(data.lm_dataset(_cfg(memmap_dir), split="val", seq_len=SEQ, batch_size=2, seed=0))
    assert len(val) == 3
    assert sorted(sum((_starts(b) for b in val), [])) == list(range(6))
    assert all(b["inputs"].min() >= 5000 for b in val)
    two = list(data.lm_dataset(_cfg(memmap_dir), split="val", seq_len=SEQ, batch_size=2, seed=0,
                               num_epochs=2))
    assert len(two) == 6
    train = data.lm_dataset(_cfg(memmap_dir), split="train", seq_len=SEQ, batch_size=4, seed=0)
    assert len(_take(train, 50)) == 50  # 10 epochs and counting
    finite = list(data.lm_dataset(_cfg(memmap_dir), split="train", seq_len=SEQ, batch_size=4,
                                  seed=0, num_epochs=1))
    assert len(finite) == 5
    partial = list(data.lm_dataset(_cfg(memmap_dir), split="val", seq_len=SEQ, batch_size=4,
                                   seed=0, drop_remainder=False))
    assert [len(b["inputs"]) for b in partial] == [4, 2]


def test_shards_are_disjoint_and_cover(memmap_dir):
    seen = []
    for shard in range(3):
        ds = data.lm_dataset(_cfg(memmap_dir), split="train", seq_len=SEQ, batch_size=2, seed=0,
                             shard_index=shard, shard_count=3, num_epochs=1)
        batches = list(ds)
        assert len(batches) == 3  # 20 windows -> 18 usable -> 6 per shard
        seen.append({s for b in batches for s in _starts(b)})
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])
    assert len(seen[0] | seen[1] | seen[2]) == 18


@pytest.mark.parametrize("num_threads", [0, 2])
def test_get_state_set_state_resumes_exactly(memmap_dir, num_threads):
    cfg = _cfg(memmap_dir, num_threads=num_threads)
    ds = data.lm_dataset(cfg, split="train", seq_len=SEQ, batch_size=3, seed=5)
    it = iter(ds)
    for _ in range(9):  # into the second epoch (6 batches per epoch)
        next(it)
    state = it.get_state()
    json.dumps(state)  # checkpointable as JSON (what grain's Orbax handler writes)
    expected = [next(it) for _ in range(7)]
    # a fresh pipeline (as after a restart) restored from the saved state
    it2 = iter(data.lm_dataset(cfg, split="train", seq_len=SEQ, batch_size=3, seed=5))
    it2.set_state(state)
    got = [next(it2) for _ in range(7)]
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a["inputs"], b["inputs"])
        np.testing.assert_array_equal(a["targets"], b["targets"])
    # and the uninterrupted stream agrees
    full = _take(data.lm_dataset(cfg, split="train", seq_len=SEQ, batch_size=3, seed=5), 16)
    for a, b in zip(full[9:], got, strict=True):
        np.testing.assert_array_equal(a["inputs"], b["inputs"])


def test_dtype_from_meta_and_uint8(tmp_path):
    np.frombuffer(b"abcdefghijklmnopqrstuvwxyz" * 4, np.uint8).tofile(tmp_path / "train.bin")
    np.frombuffer(b"0123456789" * 4, np.uint8).tofile(tmp_path / "val.bin")
    (tmp_path / "meta.json").write_text(json.dumps({"dtype": "uint8"}))
    cfg = ml_collections.ConfigDict({"name": "memmap", "path": str(tmp_path), "dtype": None})
    batch = _take(data.lm_dataset(cfg, split="val", seq_len=4, batch_size=2, seed=0), 1)[0]
    assert batch["inputs"].max() <= ord("9") and batch["inputs"].min() >= ord("0")


def test_stdlib_text_default(tmp_path, monkeypatch):
    monkeypatch.setattr(data.corpus, "STDLIB_MAX_TRAIN_BYTES", 200_000)
    monkeypatch.setattr(data.corpus, "STDLIB_MAX_VAL_BYTES", 20_000)
    cfg = {"cache_dir": str(tmp_path)}  # name defaults to 'stdlib_text'
    batch = _take(data.lm_dataset(cfg, split="train", seq_len=64, batch_size=4, seed=0), 1)[0]
    assert batch["inputs"].shape == (4, 64) and batch["inputs"].max() < 256
    val = list(data.lm_dataset(cfg, split="val", seq_len=64, batch_size=4, seed=0))
    meta = json.loads((data.corpus.stdlib_corpus_dir(tmp_path) / "meta.json").read_text())
    assert meta["train_bytes"] <= 200_000 + 2 * meta["train_docs"]
    assert len(val) == ((meta["val_bytes"] - 1) // 64) // 4


def test_config_errors(memmap_dir):
    kw = dict(split="train", seq_len=SEQ, batch_size=4, seed=0)
    with pytest.raises(ValueError, match=r"unknown data name 'imagenet'.*'stdlib_text'"):
        data.lm_dataset({"name": "imagenet"}, **kw)
    with pytest.raises(ValueError, match=r"\['shuffle_buffer'\].*valid"):
        data.lm_dataset(_cfg(memmap_dir, shuffle_buffer=3), **kw)
    with pytest.raises(ValueError, match="needs data.path"):
        data.lm_dataset({"name": "memmap"}, **kw)
    with pytest.raises(ValueError, match="not a language-model dataset"):
        data.lm_dataset({"name": "digits"}, **kw)
    with pytest.raises(ValueError, match="data.dtype='int8'"):
        data.lm_dataset(_cfg(memmap_dir, dtype="int8"), **kw)
    with pytest.raises(ValueError, match="fewer than batch_size=64"):
        data.lm_dataset(_cfg(memmap_dir), **{**kw, "batch_size": 64})
    with pytest.raises(ValueError, match="split='test'"):
        data.lm_dataset(_cfg(memmap_dir), **{**kw, "split": "test"})
    with pytest.raises(ValueError, match="shard_index=2"):
        data.lm_dataset(_cfg(memmap_dir), **kw, shard_index=2, shard_count=2)
    with pytest.raises(ValueError, match="val.bin"):
        (memmap_dir / "val.bin").unlink()
        data.lm_dataset(_cfg(memmap_dir), **{**kw, "split": "val"})


def test_window_gather_pickles_without_the_array(memmap_dir):
    import pickle

    gather = lm.WindowGather(memmap_dir / "train.bin", "uint16", SEQ)
    first = gather(np.array([2, 0]))
    clone = pickle.loads(pickle.dumps(gather))
    assert len(pickle.dumps(gather)) < 1000
    np.testing.assert_array_equal(clone(np.array([2, 0]))["inputs"], first["inputs"])
    assert first["inputs"][0, 0] == 1000 + 2 * SEQ


def test_token_ids_above_vocab_name_the_file_the_id_and_the_vocab(memmap_dir, monkeypatch):
    kw = dict(split="train", seq_len=SEQ, batch_size=4, seed=0)
    train_bin = memmap_dir / "train.bin"
    # token values run 1000..1160 (see memmap_dir)
    with pytest.raises(data.DataError) as info:
        data.lm_dataset(_cfg(memmap_dir), **kw, vocab_size=1100)
    assert str(info.value).startswith(
        f"token id 1160 >= model.vocab_size=1100 in '{train_bin}' (largest id in the file)")
    # files too large to scan up front are checked batch by batch
    monkeypatch.setattr(lm, "SCAN_BYTES", 0)
    it = iter(data.lm_dataset(_cfg(memmap_dir), **kw, vocab_size=1100))
    with pytest.raises(data.DataError, match=rf">= model\.vocab_size=1100 in '{train_bin}' "
                       r"\(in the windows starting at token \d+\)"):
        for _ in range(5):
            next(it)
    assert len(_take(data.lm_dataset(_cfg(memmap_dir), **kw, vocab_size=1161), 5)) == 5


def test_odd_sized_token_file_names_the_file_and_the_dtype(memmap_dir):
    (memmap_dir / "val.bin").write_bytes(b"\x00" * 7)
    with pytest.raises(data.DataError) as info:
        data.lm_dataset(_cfg(memmap_dir), split="val", seq_len=SEQ, batch_size=1, seed=0)
    assert str(info.value).startswith(
        f"token file '{memmap_dir / 'val.bin'}' has 7 bytes, not a multiple of 2 (uint16): is "
        "data.dtype right?")


def test_rows_read_only_those_rows_of_every_batch(memmap_dir):
    """Each process of a multi-host run reads only its rows of the global batch."""
    kw = dict(split="train", seq_len=SEQ, batch_size=6, seed=3)
    full = _take(data.lm_dataset(_cfg(memmap_dir), **kw), 7)
    for rows in ([0, 1, 2], [3, 4, 5], [1, 4]):
        part = _take(data.lm_dataset(_cfg(memmap_dir), **kw, rows=np.array(rows)), 7)
        for a, b in zip(full, part, strict=True):
            np.testing.assert_array_equal(a["inputs"][rows], b["inputs"])
            np.testing.assert_array_equal(a["targets"][rows], b["targets"])
    with pytest.raises(ValueError, match=r"rows=.* must be indices in \[0, batch_size=6\)"):
        data.lm_dataset(_cfg(memmap_dir), **kw, rows=np.array([6]))
