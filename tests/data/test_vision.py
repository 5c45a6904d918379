"""Vision data: scikit-learn digits, CIFAR-10 from local pickle/npz files, resume, errors."""

import itertools
import pickle

import numpy as np
import pytest

from optaxlab import data
from optaxlab.data import vision


def _take(ds, n):
    return list(itertools.islice(iter(ds), n))


def test_digits_batches():
    ds = data.vision_dataset({"name": "digits"}, split="train", batch_size=16, seed=0)
    batch = _take(ds, 1)[0]
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (16, 8, 8, 1) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert set(batch["label"].tolist()) <= set(range(10))


def test_digits_split_sizes_and_val_pass():
    splits = vision.load_digits()
    assert len(splits["val"][1]) == vision.DIGITS_VAL_SIZE
    assert len(splits["train"][1]) + len(splits["val"][1]) == 1797
    val = list(data.vision_dataset({"name": "digits"}, split="val", batch_size=50, seed=0,
                                   drop_remainder=False))
    labels = np.concatenate([b["label"] for b in val])
    assert len(labels) == 360
    np.testing.assert_array_equal(np.sort(labels), np.sort(splits["val"][1]))
    # train and val hold different examples: no val image equals the train image at its rank
    train_set = {img.tobytes() for img in splits["train"][0]}
    overlap = sum(img.tobytes() in train_set for img in splits["val"][0])
    assert overlap < 5  # the raw dataset has a handful of duplicate images, nothing more


def test_vision_resume_exact():
    cfg = {"name": "digits"}
    it = iter(data.vision_dataset(cfg, split="train", batch_size=100, seed=2))
    for _ in range(16):  # crosses the first epoch boundary (14 batches per epoch)
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(4)]
    it2 = iter(data.vision_dataset(cfg, split="train", batch_size=100, seed=2))
    it2.set_state(state)
    for a, b in zip(expected, [next(it2) for _ in range(4)], strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


def _write_fake_cifar(folder, n=6):
    """CIFAR-10 python-pickle batches (bytes keys, uint8 rows of 3072 = R, G, B planes)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [*vision.CIFAR_TRAIN_FILES, vision.CIFAR_TEST_FILE]:
        pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": pixels,
                         b"filenames": [b"x.png"] * n}, f)
        batches[name] = (pixels, labels)
    return batches


def test_cifar10_pickle_batches(tmp_path):
    batches = _write_fake_cifar(tmp_path / "cifar-10-batches-py")
    vision.load_cifar10.cache_clear()
    splits = vision.load_cifar10(str(tmp_path))
    x, y = splits["train"]
    assert x.shape == (30, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int32
    pixels, labels = batches["data_batch_2"]
    # channel planes -> HWC, then standardized per channel
    want = pixels[0].reshape(3, 32, 32).transpose(1, 2, 0) / 255.0
    np.testing.assert_allclose(x[6], (want - vision.CIFAR_MEAN) / vision.CIFAR_STD, rtol=1e-5)
    assert y[6] == labels[0]
    assert splits["val"][0].shape == (6, 32, 32, 3)
    ds = data.vision_dataset({"name": "cifar10", "path": str(tmp_path)}, split="val",
                             batch_size=3, seed=0)
    got = list(ds)
    assert len(got) == 2 and got[0]["image"].shape == (3, 32, 32, 3)
    assert sorted(np.concatenate([b["label"] for b in got]).tolist()) == \
        sorted(batches["test_batch"][1])


def test_cifar10_npz(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "cifar10.npz",
             x_train=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
             y_train=rng.integers(0, 10, (8, 1)),
             x_test=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
             y_test=rng.integers(0, 10, (4, 1)))
    batch = _take(data.vision_dataset({"name": "cifar10", "path": str(tmp_path)},
                                      split="train", batch_size=4, seed=0), 1)[0]
    assert batch["image"].shape == (4, 32, 32, 3) and batch["label"].shape == (4,)


def test_cifar10_missing_names_expected_path(tmp_path):
    missing = r"CIFAR-10 not found.*data_batch_1.*nowhere/cifar-10-batches-py"
    with pytest.raises(ValueError, match=missing):
        data.vision_dataset({"name": "cifar10", "path": str(tmp_path / "nowhere")},
                            split="train", batch_size=4, seed=0)
    with pytest.raises(ValueError, match=str(tmp_path / "cache" / "cifar10")):
        data.vision_dataset({"name": "cifar10", "cache_dir": str(tmp_path / "cache")},
                            split="train", batch_size=4, seed=0)


def test_vision_errors():
    with pytest.raises(ValueError, match="not an image dataset"):
        data.vision_dataset({"name": "stdlib_text"}, split="train", batch_size=4, seed=0)
    with pytest.raises(ValueError, match="split='test'"):
        data.vision_dataset({"name": "digits"}, split="test", batch_size=4, seed=0)
    with pytest.raises(ValueError, match="fewer than batch_size=4000"):
        data.vision_dataset({"name": "digits"}, split="train", batch_size=4000, seed=0)


class _Payload:
    """What a crafted pickle would run on load: create a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_crafted_cifar_pickle_is_rejected_and_its_payload_never_runs(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_fake_cifar(folder)
    marker = tmp_path / "payload_ran"
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Payload(marker), b"labels": [1]}, f)
    assert pickle.loads(pickle.dumps(_Payload(tmp_path / "proof"))) is not None  # it would run
    assert (tmp_path / "proof").exists()
    vision.load_cifar10.cache_clear()
    with pytest.raises(data.DataError) as info:
        vision.load_cifar10(str(tmp_path))
    assert str(info.value) == (
        f"CIFAR-10 file '{folder / 'data_batch_1'}' is not a plain CIFAR-10 batch and was not "
        "loaded: it refers to io.open, which a CIFAR-10 batch never does")
    assert not marker.exists()


def test_cifar_pickle_of_the_wrong_shape_is_bad_data(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_fake_cifar(folder)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [1, 2]}, f, protocol=2)
    vision.load_cifar10.cache_clear()
    with pytest.raises(data.DataError, match=r"test_batch': 'data' must be a uint8 array"):
        vision.load_cifar10(str(tmp_path))


def test_vision_rows_read_only_those_rows():
    kw = dict(split="train", batch_size=8, seed=1)
    full = _take(data.vision_dataset({"name": "digits"}, **kw), 3)
    part = _take(data.vision_dataset({"name": "digits"}, **kw, rows=np.array([4, 5, 6, 7])), 3)
    for a, b in zip(full, part, strict=True):
        np.testing.assert_array_equal(a["image"][4:], b["image"])
        np.testing.assert_array_equal(a["label"][4:], b["label"])
