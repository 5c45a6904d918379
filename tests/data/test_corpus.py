"""Corpus builder: document discovery, deterministic held-out split, caps, atomic writes, stdlib."""

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from optaxlab.data import corpus
from optaxlab.data.build_corpus import main as build_main


def _make_folder(root: Path, n: int = 40) -> dict[str, bytes]:
    texts = {}
    for i in range(n):
        rel = f"sub{i % 3}/doc{i:02d}.txt"
        data = (f"document {i}\n" + "lorem ipsum " * (20 + 7 * i)).encode()
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        texts[rel] = data
    (root / ".hidden.txt").write_bytes(b"secret")
    (root / ".git").mkdir()
    (root / ".git" / "x.txt").write_bytes(b"git internals")
    (root / "image.bin").write_bytes(b"\x89PNG\x00\x00binary")
    (root / "empty.txt").write_bytes(b"")
    return texts


def test_folder_documents_skips_hidden_binary_and_empty(tmp_path):
    texts = _make_folder(tmp_path)
    docs = corpus.folder_documents(tmp_path)
    assert {d.name for d in docs} == set(texts)
    assert all(d.read() == texts[d.name] for d in docs)
    assert {d.name for d in corpus.folder_documents(tmp_path, [".bin"])} == set()
    with pytest.raises(ValueError, match="does not exist"):
        corpus.folder_documents(tmp_path / "nope")


def test_split_is_deterministic_disjoint_and_sized(tmp_path):
    _make_folder(tmp_path)
    docs = corpus.folder_documents(tmp_path)
    train, val = corpus.split_documents(docs, 0.1)
    train2, val2 = corpus.split_documents(list(reversed(docs)), 0.1)
    assert [d.name for d in train] == [d.name for d in train2]
    assert [d.name for d in val] == [d.name for d in val2]
    assert not {d.name for d in train} & {d.name for d in val}
    assert {d.name for d in train} | {d.name for d in val} == {d.name for d in docs}
    total = sum(d.size for d in docs)
    n_val = sum(d.size for d in val)
    assert 0.1 * total <= n_val <= 0.125 * total
    capped, _ = corpus.split_documents(docs, 0.1, max_train_bytes=2000)
    assert 0 < sum(d.size for d in capped) <= 2000


def test_build_writes_bins_and_meta(tmp_path):
    texts = _make_folder(tmp_path / "src")
    meta = corpus.build(corpus.folder_documents(tmp_path / "src"), tmp_path / "out",
                        val_fraction=0.1)
    train = (tmp_path / "out" / "train.bin").read_bytes()
    val = (tmp_path / "out" / "val.bin").read_bytes()
    assert meta == json.loads((tmp_path / "out" / "meta.json").read_text())
    assert (meta["train_bytes"], meta["val_bytes"]) == (len(train), len(val))
    assert meta["dtype"] == "uint8" and meta["vocab_size"] == 256
    assert meta["train_docs"] + meta["val_docs"] == len(texts)
    # every document lands in exactly one split, whole
    for data in texts.values():
        assert (data in train) != (data in val)
    assert not list((tmp_path / "out").glob("*.tmp"))
    np.testing.assert_array_equal(corpus.load_tokens(tmp_path / "out" / "val.bin"),
                                  np.frombuffer(val, np.uint8))


def test_single_file_holds_out_the_tail(tmp_path):
    (tmp_path / "src").mkdir()
    text = bytes(range(32, 127)) * 100
    (tmp_path / "src" / "one.txt").write_bytes(text)
    meta = corpus.build(corpus.folder_documents(tmp_path / "src"), tmp_path / "out",
                        val_fraction=0.05)
    train = (tmp_path / "out" / "train.bin").read_bytes()
    val = (tmp_path / "out" / "val.bin").read_bytes()
    assert meta["split"] == "tail"
    assert train + val == text and len(val) == int(len(text) * 0.05)


def test_concurrent_builds_are_safe(tmp_path):
    _make_folder(tmp_path / "src")
    docs = corpus.folder_documents(tmp_path / "src")
    errors = []

    def run():
        try:
            corpus.build(docs, tmp_path / "out", val_fraction=0.1)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    reference = corpus.build(docs, tmp_path / "ref", val_fraction=0.1)
    for name in ("train.bin", "val.bin"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
    assert json.loads((tmp_path / "out" / "meta.json").read_text()) == reference
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_stdlib_corpus_built_once(tmp_path, capsys):
    out = corpus.ensure_stdlib_corpus(tmp_path, max_train_bytes=300_000, max_val_bytes=30_000)
    assert "building the stdlib text corpus" in capsys.readouterr().err
    meta = json.loads((out / "meta.json").read_text())
    assert 0 < meta["train_bytes"] <= 300_000 + 2 * meta["train_docs"]
    assert 0 < meta["val_bytes"] <= 1.25 * 30_000 + 2 * meta["val_docs"]
    assert out.parent.parent == tmp_path
    train = (out / "train.bin").read_bytes()
    assert b"def " in train and b"import " in train
    assert corpus.ensure_stdlib_corpus(tmp_path) == out  # cached: no second build
    assert capsys.readouterr().err == ""


def test_stdlib_documents_cover_sources_and_topics():
    docs = corpus.stdlib_documents()
    names = {d.name for d in docs}
    assert "os.py" in names and "json/__init__.py" in names
    assert any(n.startswith("pydoc_topics/") for n in names)
    assert not any("site-packages" in n or n == "pydoc_data/topics.py" for n in names)
    # the default caps (~24 MB train, ~1 MB val) are a real sample of a larger corpus
    assert sum(d.size for d in docs) > corpus.STDLIB_MAX_TRAIN_BYTES


def test_build_corpus_command(tmp_path, capsys):
    _make_folder(tmp_path / "src")
    assert build_main([str(tmp_path / "src"), str(tmp_path / "out"),
                       "--val-fraction", "0.2"]) == 0
    out = capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert f"train.bin {meta['train_bytes']:,} tokens" in out
    assert meta["val_fraction"] == 0.2
    assert build_main([str(tmp_path / "missing"), str(tmp_path / "o2")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_build_corpus_module_runs(tmp_path):
    _make_folder(tmp_path / "src", n=5)
    proc = subprocess.run([sys.executable, "-m", "optaxlab.data.build_corpus",
                           str(tmp_path / "src"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "train.bin" in proc.stdout and (tmp_path / "out" / "val.bin").exists()
