"""Datasets: embedded splits, local-folder loaders (fed with tiny files in the real formats), FL partitions."""
import hashlib
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from fedleak.data import datasets as D
from fedleak.data.datasets import load_dataset, partition, photo_crops, photo_pixels
from fedleak.core.errors import ConfigError, DataError, UnknownNameError


def hashes(images: torch.Tensor) -> set[str]:
    # Round to 8 bits first: identical source pixels must collide even if float noise differs.
    raw = (images * 255).round().to(torch.uint8).numpy()
    return {hashlib.sha1(img.tobytes()).hexdigest() for img in raw}


def reload(cached) -> D.ImageData:
    """Rebuild from scratch, so determinism is not just the cache answering twice."""
    cached.cache_clear()
    return cached()


# ----------------------------------------------------------------------------- digits

@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_shapes_and_range(digits):
    assert digits.train_images.shape == (4000, 1, 28, 28)
    assert digits.victim_images.shape == (1000, 1, 28, 28)
    assert digits.train_images.dtype == torch.float32
    assert digits.train_labels.dtype == torch.long
    assert digits.num_classes == 10 and len(digits.class_names) == 10
    assert digits.shape == (1, 28, 28)
    for images in (digits.train_images, digits.victim_images):
        assert images.min() >= 0 and images.max() <= 1 and images.max() > 0.99
    assert len(digits.mean) == len(digits.std) == 1
    assert digits.mean[0] == pytest.approx(digits.train_images.mean().item(), abs=1e-5)


def test_digits_split_is_stratified(digits):
    assert torch.bincount(digits.victim_labels, minlength=10).tolist() == [100] * 10
    assert torch.bincount(digits.train_labels, minlength=10).tolist() == [400] * 10
    # A prefix of the victims should already mix classes (attacks often take the first few).
    assert len(set(digits.victim_labels[:8].tolist())) > 3


def test_digits_train_and_victims_disjoint(digits):
    train, victim = hashes(digits.train_images), hashes(digits.victim_images)
    assert len(train) == 4000 and len(victim) == 1000
    assert not train & victim


def test_digits_deterministic(digits):
    again = reload(D._digits_cached)
    for field in ("train_images", "train_labels", "victim_images", "victim_labels"):
        assert torch.equal(getattr(digits, field), getattr(again, field))
    assert again.mean == digits.mean and again.std == digits.std


def test_cached_load_is_a_private_copy():
    first = load_dataset("digits")
    first.train_images.zero_()
    assert load_dataset("digits").train_images.max() > 0


def test_victims_batch_and_range(digits):
    images, labels = digits.victims([3, 0, 999])
    assert images.shape == (3, 1, 28, 28)
    assert torch.equal(images[1], digits.victim_images[0]) and labels[2] == digits.victim_labels[999]
    assert digits.victims(5)[0].shape == (1, 1, 28, 28)
    for bad in ([0, 1000], [-1], [1.5]):
        with pytest.raises(DataError) as err:
            digits.victims(bad)
        assert "\n" not in str(err.value) and "digits" in str(err.value)


# ----------------------------------------------------------------------------- photos

@pytest.fixture(scope="module")
def photos():
    return load_dataset("photos")


def test_photos_shapes(photos):
    assert photos.shape == (3, 32, 32)
    assert photos.num_classes == len(photos.class_names) == 8
    assert torch.bincount(photos.train_labels).tolist() == [D.PHOTO_TRAIN_PER_CLASS] * 8
    assert torch.bincount(photos.victim_labels).tolist() == [D.PHOTO_VICTIMS_PER_CLASS] * 8
    assert photos.train_images.min() >= 0 and photos.train_images.max() <= 1
    assert len(photos.mean) == len(photos.std) == 3


def test_photos_deterministic(photos):
    again, _ = reload(D._photos_cached)
    assert torch.equal(photos.train_images, again.train_images)
    assert torch.equal(photos.victim_images, again.victim_images)
    assert torch.equal(photos.victim_labels, again.victim_labels)


def test_photo_crops_match_images(photos):
    for split in ("train", "victim"):
        crops = photo_crops(split)
        images, labels = getattr(photos, f"{split}_images"), getattr(photos, f"{split}_labels")
        assert len(crops) == len(images)
        for i in (0, 1, len(crops) - 1):
            c = crops[i]
            expected = photo_pixels(c.photo)[c.top:c.top + c.size, c.left:c.left + c.size]
            assert torch.equal(images[i], torch.from_numpy(expected.transpose(2, 0, 1).copy()))
            assert photos.class_names[labels[i]] == c.photo


def test_photo_victims_never_overlap_train(photos):
    train, victim = photo_crops("train"), photo_crops("victim")
    for name in photos.class_names:
        t = np.array([(c.top, c.left) for c in train if c.photo == name])
        v = np.array([(c.top, c.left) for c in victim if c.photo == name])
        size = D.PHOTO_CROP
        rows = np.abs(t[:, None, 0] - v[None, :, 0]) < size
        cols = np.abs(t[:, None, 1] - v[None, :, 1]) < size
        assert not (rows & cols).any(), name
    assert not hashes(photos.train_images) & hashes(photos.victim_images)


def test_photo_crop_overlap_rule():
    box = D.PhotoCrop("coffee", 10, 10)
    assert box.overlaps(D.PhotoCrop("coffee", 41, 41))
    assert not box.overlaps(D.PhotoCrop("coffee", 10, 42))
    assert not box.overlaps(D.PhotoCrop("rocket", 10, 10))


# ----------------------------------------------------------------------------- CIFAR-10 files

class Py2Str(bytes):
    """A Python 2 `str`. The real CIFAR pickles were written by Python 2, so their dict keys,
    label names and raw array bytes are this type, which loads as `str` under
    encoding='latin1' (torchvision) and as bytes under encoding='bytes'."""


def _py2_array(arr: np.ndarray):
    func, args, state = arr.__reduce__()
    as_py2 = lambda v: Py2Str(v) if isinstance(v, bytes) else v  # noqa: E731
    return func, tuple(as_py2(a) for a in args), tuple(as_py2(s) for s in state)


class Py2Pickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)
    dispatch_table = {np.ndarray: _py2_array}

    def save_py2_str(self, obj):
        raw = bytes(obj)
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[Py2Str] = save_py2_str


def py2_pickle(obj, path):
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root, per_batch=4, test_size=5, seed=0):
    """A tiny CIFAR-10 in the official layout; returns the rows and labels written."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test_size)]:
        rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        py2_pickle({Py2Str(b"batch_label"): Py2Str(name.encode()), Py2Str(b"labels"): labels,
                    Py2Str(b"data"): rows,
                    Py2Str(b"filenames"): [Py2Str(b"img_%d.png" % i) for i in range(n)]},
                   folder / name)
        written[name] = (rows, labels)
    py2_pickle({Py2Str(b"num_cases_per_batch"): per_batch,
                Py2Str(b"label_names"): [Py2Str(n.encode()) for n in CIFAR_NAMES],
                Py2Str(b"num_vis"): 3072}, folder / "batches.meta")
    return written


def as_cifar_rows(images: torch.Tensor) -> np.ndarray:
    return (images * 255).round().to(torch.uint8).reshape(len(images), -1).numpy()


def test_fixture_is_python2_pickle(tmp_path):
    write_cifar10(tmp_path)
    raw = (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    as_bytes = pickle.loads(raw, encoding="bytes")
    assert set(as_bytes) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert as_bytes[b"data"].dtype == np.uint8 and as_bytes[b"data"].shape == (4, 3072)


@pytest.mark.parametrize("inside", [False, True])
def test_cifar10_round_trip(tmp_path, inside):
    written = write_cifar10(tmp_path)
    root = tmp_path / "cifar-10-batches-py" if inside else tmp_path
    ds = load_dataset("cifar10", root=str(root))
    train_rows = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert ds.train_images.shape == (20, 3, 32, 32) and ds.victim_images.shape == (5, 3, 32, 32)
    # CIFAR rows are 1024 red, then 1024 green, then 1024 blue values: exactly CHW flattened.
    assert np.array_equal(as_cifar_rows(ds.train_images), train_rows)
    assert np.array_equal(as_cifar_rows(ds.victim_images), written["test_batch"][0])
    assert ds.train_labels.tolist() == train_labels
    assert ds.victim_labels.tolist() == written["test_batch"][1]
    assert ds.class_names == tuple(CIFAR_NAMES) and ds.num_classes == 10
    assert ds.train_images[0, 0, 0, 1].item() == pytest.approx(train_rows[0, 1] / 255)
    assert ds.train_images[0, 2, 1, 0].item() == pytest.approx(train_rows[0, 2048 + 32] / 255)


def test_cifar10_limit(tmp_path):
    written = write_cifar10(tmp_path)
    ds = load_dataset("cifar10", root=tmp_path, limit=7)
    assert len(ds.train_images) == 7 and len(ds.victim_images) == 5
    train_rows = {r.tobytes() for i in range(1, 6) for r in written[f"data_batch_{i}"][0]}
    assert {r.tobytes() for r in as_cifar_rows(ds.train_images)} <= train_rows
    again = load_dataset("cifar10", root=tmp_path, limit=7)
    assert torch.equal(ds.train_images, again.train_images)
    with pytest.raises(ConfigError):
        load_dataset("cifar10", root=tmp_path, limit=0)


def test_cifar10_partial_folder_is_missing(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="cifar10"):
        load_dataset("cifar10", root=tmp_path)


# ----------------------------------------------------------------------------- other folders

def write_idx(folder, prefix, images: np.ndarray, labels: np.ndarray):
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 2051, n, h, w) + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, n) + labels.tobytes())


def test_mnist_idx_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    raw = tmp_path / "MNIST" / "raw"
    train = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    write_idx(raw, "train", train, np.arange(6, dtype=np.uint8))
    write_idx(raw, "t10k", test, np.array([9, 8, 7], dtype=np.uint8))
    ds = load_dataset("mnist", root=tmp_path)
    assert ds.shape == (1, 28, 28) and ds.num_classes == 10
    assert np.array_equal((ds.victim_images[:, 0] * 255).round().to(torch.uint8).numpy(), test)
    assert ds.train_labels.tolist() == list(range(6)) and ds.victim_labels.tolist() == [9, 8, 7]


def test_imagefolder(tmp_path):
    rng = np.random.default_rng(2)
    for split, count in (("train", 3), ("val", 2)):
        for cls in ("ant", "bee"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i}.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "val" / "bee" / "grey.png")
    ds = load_dataset("imagefolder", root=tmp_path, size=16)
    assert ds.train_images.shape == (6, 3, 16, 16) and ds.victim_images.shape == (5, 3, 16, 16)
    assert ds.class_names == ("ant", "bee")
    assert ds.train_labels.tolist() == [0, 0, 0, 1, 1, 1] and ds.victim_labels.tolist() == [0, 0, 1, 1, 1]
    assert len(load_dataset("imagefolder", root=tmp_path, size=8, limit=2).train_images) == 2


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashion-mnist", "imagefolder"])
def test_missing_folder_says_what_to_put_where(tmp_path, name):
    where = tmp_path / "nothing_here"
    with pytest.raises(DataError) as err:
        load_dataset(name, root=where)
    message = str(err.value)
    assert name in message and str(where) in message and "\n" not in message
    with pytest.raises(DataError, match=name):
        load_dataset(name)


def test_empty_imagefolder(tmp_path):
    (tmp_path / "train" / "ant").mkdir(parents=True)
    with pytest.raises(DataError, match="imagefolder"):
        load_dataset("imagefolder", root=tmp_path)


def test_unknown_dataset_and_option():
    with pytest.raises(UnknownNameError, match="digits"):
        load_dataset("cifar11")
    with pytest.raises(ConfigError, match="limit"):
        load_dataset("digits", limit=3)


# ----------------------------------------------------------------------------- partition

LABELS = np.repeat(np.arange(10), 100)


def check_cover(parts, n):
    joined = np.concatenate(parts)
    assert len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))


def test_iid_partition_balanced():
    parts = partition(LABELS, 7, seed=3)
    check_cover(parts, len(LABELS))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    # Shuffled, not just consecutive ranges of a class-sorted array.
    assert len(np.unique(LABELS[parts[0]])) == 10


def mean_label_entropy(parts) -> float:
    entropies = []
    for p in parts:
        freq = np.bincount(LABELS[p], minlength=10) / len(p)
        freq = freq[freq > 0]
        entropies.append(-(freq * np.log(freq)).sum())
    return float(np.mean(entropies))


def test_dirichlet_alpha_controls_skew():
    skewed = partition(LABELS, 10, "dirichlet", alpha=0.1, seed=0, min_size=5)
    even = partition(LABELS, 10, "dirichlet", alpha=100.0, seed=0, min_size=5)
    for parts in (skewed, even):
        check_cover(parts, len(LABELS))
        assert min(len(p) for p in parts) >= 5
    assert mean_label_entropy(skewed) < mean_label_entropy(even) - 0.5
    assert mean_label_entropy(even) > 0.95 * np.log(10)


def test_partition_seeded():
    for scheme in ("iid", "dirichlet"):
        a = partition(torch.from_numpy(LABELS), 5, scheme, seed=11)
        b = partition(LABELS, 5, scheme, seed=11)
        c = partition(LABELS, 5, scheme, seed=12)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
        assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("kwargs", [
    {"scheme": "shards"},
    {"scheme": "dirichlet", "alpha": 0},
    {"scheme": "dirichlet", "alpha": -1.0},
    {"num_clients": 0},
    {"num_clients": 2000},
])
def test_partition_bad_config(kwargs):
    kwargs = {"num_clients": 4, **kwargs}
    with pytest.raises(ConfigError):
        partition(LABELS, **kwargs)


def test_dirichlet_gives_up_with_clear_error():
    with pytest.raises(ConfigError, match="min_size"):
        partition(LABELS, 50, "dirichlet", alpha=0.001, min_size=20)
