"""Datasets as in-memory uint8 tensors, a fixed train/val/test split and a fast batch iterator.

Registry (``DATASETS``): ``fashion-mnist`` (the default; offline through Debian's
``dataset-fashion-mnist``), ``mnist``, ``cifar10``, ``cifar100``, ``synthetic`` (generated; also
``synthetic-CxHxW[-Kclasses]``), ``tiny-imagenet`` (the official ``tiny-imagenet-200`` folder as
unzipped: ``wnids.txt``, ``train/<wnid>/images/*.JPEG``, ``val/images`` + ``val_annotations.txt``;
its labelled val set is the test split, as in the Backward Smoothing code) and ``imagefolder``
(``root/{train,test}/<class>/<image>``).
Files are parsed by the readers below (IDX, CIFAR pickles), never checked against md5 lists, so
small files written by ``write_idx`` / ``write_mnist_files`` / ``write_cifar_files`` load too.

Images stay uint8 ``(N, C, H, W)`` in memory and become float in [0, 1] one batch at a time.
``DatasetInfo.mean`` / ``std`` are for the model's normalisation layer: attacks, eps and
smoothing noise all act in [0, 1] pixel space (as in the Backward Smoothing code).

Splits: 'val' is a held-out part of the official training set chosen by a fixed permutation
(``seed`` defaults to 0 and is *not* the run's seed, so every run shares one validation set; the
reference code selects checkpoints on test data, we do not), 'train' is the rest, 'test' the
official test set. ``n`` takes a prefix, so smaller subsets are nested in larger ones.

Run identity: ``fingerprint(name, root=...)`` is a digest of the files a run's training split is
read from (of the generated tensors for ``synthetic``), part of every run's store key, so a run
trained on one data folder is never returned for another; without the files, the published
checksums of the official release stand in for them.  File digests are cached per (path,
size, mtime) in ``$RS_CACHE`` (default ``~/.cache/rs_lib``), so after the first time it costs a
``stat`` per file.

Reproducible epochs: build one generator per epoch, ``epoch_generator(seed, epoch)``, and pass it
to ``batches``; epoch e's batches then depend on (seed, e) only, so resuming after a checkpoint
needs no RNG state (skip finished batches of a partial epoch with ``itertools.islice``).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import math
import os
import pickle
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rs_lib import _validate as check
from rs_lib.distributed import shard_bounds

SPLITS = ("train", "val", "test")
AUGMENTS = ("none", "flip", "crop_flip")
REPO_DATA = Path(__file__).resolve().parent.parent / "data"
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),)}
SYNTHETIC_SIZES = {"train": 6000, "test": 1000}


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are nowhere we looked; the message lists where and how to get them."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset. ``shape`` is (C, H, W); ``mean``/``std`` are per channel in
    [0, 1] pixel units (for ``models.Normalized``); ``augment`` is the training policy of
    ``augment_batch`` ('crop_flip' = RandomCrop(H, padding=4) + horizontal flip)."""
    name: str
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()
    augment: str = "none"


_CIFAR100_CLASSES = tuple("""apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle
    bowl boy bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud
    cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster
    house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle
    mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree
    plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew
    skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank
    telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf
    woman worm""".split())
_REGISTRY = {info.name: info for info in (
    DatasetInfo("fashion-mnist", 10, (1, 28, 28), (0.2860,), (0.3530,), (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
        "Bag", "Ankle boot")),
    DatasetInfo("mnist", 10, (1, 28, 28), (0.1307,), (0.3081,), tuple("0123456789")),
    DatasetInfo("cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616), (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        augment="crop_flip"),
    DatasetInfo("cifar100", 100, (3, 32, 32), (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761),
                _CIFAR100_CLASSES, augment="crop_flip"),
)}
DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100", "tiny-imagenet", "synthetic", "imagefolder")
# Tiny ImageNet: 200 classes of 64x64 RGB; ImageNet statistics and flips only (the BS code's
# data_loader.py); class names are the wnids listed in wnids.txt, read with the data.
_REGISTRY["tiny-imagenet"] = DatasetInfo("tiny-imagenet", 200, (3, 64, 64), (0.485, 0.456, 0.406),
                                         (0.229, 0.224, 0.225), augment="flip")
_SYNTHETIC_NAME = re.compile(r"synthetic(?:-(\d+)x(\d+)x(\d+))?(?:-(\d+)classes)?")
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def dataset_info(name: str, *, root: str | Path | None = None) -> DatasetInfo:
    """Facts about dataset ``name`` (one of ``DATASETS`` or ``synthetic-CxHxW[-Kclasses]``);
    ``imagefolder`` needs ``root`` to read its classes and image shape."""
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    match = _SYNTHETIC_NAME.fullmatch(name) if isinstance(name, str) else None
    if match:
        c, h, w, k = (int(g) if g else d for g, d in zip(match.groups(), (1, 28, 28, 10)))
        return _synthetic_info((c, h, w), k)
    if name == "imagefolder":
        if root is None:
            raise ValueError("root must be given for name='imagefolder' (the folder of train/)")
        return _imagefolder_info(check.directory("root", root))
    raise ValueError(f"name must be one of {', '.join(DATASETS)} (or synthetic-CxHxW[-Kclasses]);"
                     f" got {name!r}")


@dataclass(frozen=True)
class ImageData:
    """Images as uint8 (N, C, H, W) on the CPU, int64 labels (N,), and the dataset's info."""
    images: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or tuple(self.images.shape[1:]) != self.info.shape:
            raise ValueError(f"images must be uint8 (N, {', '.join(map(str, self.info.shape))}),"
                             f" got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must be int64 of shape ({len(self.images)},), got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) \
                < self.info.num_classes:
            raise ValueError(f"labels must lie in [0, {self.info.num_classes - 1}]")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageData:
        """The examples at ``indices`` (a 1-D sequence of ints in [0, len)), in that order."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        if idx.dim() != 1 or (len(idx) and not 0 <= int(idx.min()) <= int(idx.max()) < len(self)):
            raise ValueError(f"indices must be a 1-D sequence of ints in [0, {len(self) - 1}]")
        return ImageData(self.images[idx], self.labels[idx], self.info)

    def tensors(self, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(x float32 in [0, 1], y int64) on ``device``; for small sets, else use ``batches``."""
        dev = check.resolve_device("device", device)
        return _to_float(self.images, dev), self.labels.to(dev)


def load(name: str, split: str, *, root: str | Path | None = None, download: bool = False,
         n: int | None = None, val_size: int | None = None, seed: int = 0) -> ImageData:
    """Split ``split`` ('train', 'val', 'test') of dataset ``name``, optionally its first ``n``.

    Data are searched in ``<base>/<subdir>`` then ``<base>`` with ``base`` = ``root``, else
    ``$RS_DATA``, else ``<repo>/data`` (plus ``/usr/share/datasets/fashion-mnist``);
    ``download=True`` fetches missing MNIST/Fashion-MNIST/CIFAR files into ``base`` with
    torchvision. ``val_size`` defaults to 5,000 for training sets of >= 50,000 images, else 10%.
    ``seed`` fixes the train/val permutation (and the synthetic generator): keep it at 0.
    Raises ``DatasetNotFoundError`` naming the places searched and the command that fixes it.
    """
    info = dataset_info(name, root=root)
    check.choice("split", split, SPLITS)
    base = check.directory("root", root) if root is not None else None
    check.flag("download", download)
    if n is not None:
        check.positive_int("n", n)
    if val_size is not None:
        check.positive_int("val_size", val_size)
    check.integer("seed", seed, low=0, high=2**32 - 1)
    part = "test" if split == "test" else "train"
    images, labels = _read_part(info.name, part, base, download, seed)
    if split != "test":
        idx = _split_indices(len(labels), split, val_size, seed)
        images, labels = images[idx], labels[idx]
    if n is not None and n > len(labels):
        raise ValueError(f"n must be <= {len(labels)} (the size of {name} '{split}'), got {n}")
    images, labels = images[:n], labels[:n]
    if split == "test":  # train/val are fresh copies (indexed); never hand out the cache itself
        images, labels = images.clone(), labels.clone()
    return ImageData(images, labels, info)


def locate(name: str, *, root: str | Path | None = None) -> Path:
    """The folder holding ``name``'s training files, searched as in ``load``; raises
    ``DatasetNotFoundError`` (places searched, fix) if none does. For ``python -m rs_lib data``."""
    check.choice("name", name, _SUBDIRS)
    base = check.directory("root", root) if root is not None else None
    if name == "imagefolder" and base is None:
        raise DatasetNotFoundError(f"imagefolder: {_HOW_TO_GET['imagefolder']}")
    return _locate(name, "train", base, False)


def download(name: str, *, root: str | Path | None = None) -> Path:
    """Fetch ``name`` (if missing) into ``root``, else ``$RS_DATA``, else ``<repo>/data``, with
    torchvision; return the folder holding it. For ``python -m rs_lib data --download NAME``."""
    check.choice("name", name, [k for k in _SUBDIRS if k != "imagefolder"])
    base = check.directory("root", root, must_exist=False) if root is not None else None
    for part in ("train", "test"):
        directory = _locate(name, part, base, True)
    return directory


def num_batches(length: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches ``batches`` yields for ``length`` examples."""
    check.integer("length", length, low=0)
    check.positive_int("batch_size", batch_size)
    return length // batch_size if drop_last else math.ceil(length / batch_size)


def batches(data: ImageData, batch_size: int, *, shuffle: bool = False, augment: bool = False,
            generator: torch.Generator | None = None, drop_last: bool = False,
            device: str | torch.device = "cpu", shard: tuple[int, int] | None = None,
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (x float32 in [0, 1], y int64) batches on ``device``, in memory, no workers.

    ``shuffle`` permutes with ``generator``; ``augment`` applies ``data.info.augment`` per batch.
    Both draw on the CPU ``generator`` (None = torch's global one), so the same generator state
    gives the same batches on any device; use ``epoch_generator(seed, epoch)`` per epoch.
    ``shard=(rank, world_size)`` yields only that rank's contiguous part of each batch
    (``distributed.shard_bounds``); the batch is drawn and augmented whole first, so the parts of
    all ranks together are exactly the 1-process batches.
    """
    if not isinstance(data, ImageData):
        raise ValueError(f"data must be an ImageData, got {type(data).__name__}")
    check.positive_int("batch_size", batch_size)
    for flag, value in (("shuffle", shuffle), ("augment", augment), ("drop_last", drop_last)):
        check.flag(flag, value)
    _check_generator(generator)
    dev = check.resolve_device("device", device)
    if shard is not None and (not isinstance(shard, tuple) or len(shard) != 2
                              or not 0 <= shard[0] < shard[1]):
        raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard!r}")
    return _batch_iter(data, batch_size, shuffle, augment, generator, drop_last, dev, shard)


def _batch_iter(data: ImageData, batch_size: int, shuffle: bool, augment: bool,
                generator: torch.Generator | None, drop_last: bool, device: torch.device,
                shard: tuple[int, int] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(data), generator=generator) if shuffle else None
    for b in range(num_batches(len(data), batch_size, drop_last)):
        sl = slice(b * batch_size, (b + 1) * batch_size)
        x, y = (data.images[sl], data.labels[sl]) if order is None else \
            (data.images[order[sl]], data.labels[order[sl]])
        if augment:
            x = augment_batch(x, policy=data.info.augment, generator=generator)
        if shard is not None:
            start, stop = shard_bounds(len(y), *shard)
            x, y = x[start:stop], y[start:stop]
        yield _to_float(x, device), y.to(device, non_blocking=True)


def augment_batch(images: torch.Tensor, *, policy: str, padding: int = 4,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image random augmentation of a batch (N, C, H, W), any dtype, one gather for all.

    'crop_flip' = torchvision's RandomCrop(H, padding, fill 0) then RandomHorizontalFlip(0.5) (the
    CIFAR recipe of the Backward Smoothing / TRADES code); 'flip' = the flip only; 'none' = as is.
    """
    check.choice("policy", policy, AUGMENTS)
    check.integer("padding", padding, low=0)
    _check_generator(generator, cpu_only=False)
    if images.dim() != 4:
        raise ValueError(f"images must be a batch (N, C, H, W), got shape {tuple(images.shape)}")
    if policy == "none":
        return images
    n, c, h, w = images.shape
    draw_on = generator.device if generator is not None else images.device
    shift = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=draw_on)
    flip = torch.randint(0, 2, (n,), generator=generator, device=draw_on).bool()
    shift, flip = shift.to(images.device), flip.to(images.device)
    if policy == "flip":
        shift, padding = torch.zeros_like(shift), 0
    rows = shift[:, :1] + torch.arange(h, device=images.device)
    cols = shift[:, 1:] + torch.arange(w, device=images.device)
    cols = torch.where(flip[:, None], cols.flip(-1), cols)   # flip after the crop
    padded = F.pad(images, (padding,) * 4) if padding else images
    flat = (rows[:, :, None] * (w + 2 * padding) + cols[:, None, :]).view(n, 1, h * w)
    return padded.flatten(2).gather(2, flat.expand(n, c, h * w)).view(n, c, h, w)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator that depends on (seed, epoch) only: the shuffling/augmentation stream
    of one training epoch, recreated on resume instead of checkpointed."""
    check.integer("seed", seed, low=0)
    check.integer("epoch", epoch, low=0)
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def make_synthetic(*, size: int, shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10,
                   seed: int = 0, part: str = "train") -> ImageData:
    """``size`` generated uint8 images: per class a smooth random template (half of it shared by
    all classes; fixed by ``seed``), times a random contrast in [0.5, 1], plus Gaussian noise
    sd 0.25, clipped to [0, 1]. A linear model learns it to > 90% in ~100 SGD steps of 64.
    ``part`` ('train' or 'test') picks an independent sample stream."""
    check.positive_int("size", size)
    check.integer("num_classes", num_classes, low=2)
    check.integer("seed", seed, low=0)
    check.choice("part", part, ("train", "test"))
    info = _synthetic_info(tuple(shape), num_classes)
    c, h, w = info.shape
    g = torch.Generator().manual_seed(seed)
    low = torch.rand((num_classes + 1, c, max(2, h // 4), max(2, w // 4)), generator=g)
    low = 0.5 * (low[:1] + low[1:])  # a shared part makes it less than trivially separable
    templates = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    g.manual_seed(int(np.random.SeedSequence([seed, SPLITS.index(part) + 1]).generate_state(1)[0]))
    labels = torch.randperm(size, generator=g) % num_classes
    contrast = 0.5 + 0.5 * torch.rand((size, 1, 1, 1), generator=g)
    noise = 0.25 * torch.randn((size, c, h, w), generator=g)
    x = 0.5 + contrast * (templates[labels] - 0.5) + noise
    return ImageData(x.clamp_(0, 1).mul_(255).round_().to(torch.uint8), labels, info)


def _synthetic_info(shape: tuple[int, ...], num_classes: int) -> DatasetInfo:
    if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape) \
            or shape[0] > 4 or min(shape[1:]) < 4:
        raise ValueError(f"shape must be (C, H, W) with 1 <= C <= 4 and H, W >= 4, got {shape}")
    check.integer("num_classes", num_classes, low=2)
    name = "synthetic" + ("" if shape == (1, 28, 28) else "-{}x{}x{}".format(*shape)) \
        + ("" if num_classes == 10 else f"-{num_classes}classes")
    return DatasetInfo(name, num_classes, shape, (0.5,) * shape[0], (0.25,) * shape[0],
                       tuple(f"class {k}" for k in range(num_classes)))


def _split_indices(total: int, split: str, val_size: int | None, seed: int) -> torch.Tensor:
    """The fixed train/val partition: numpy's legacy RandomState, whose stream never changes."""
    if val_size is None:
        val_size = 5000 if total >= 50_000 else max(1, round(total / 10))
    if val_size >= total:
        raise ValueError(f"val_size must be < {total} (the training-set size), got {val_size}")
    perm = torch.from_numpy(np.random.RandomState(seed).permutation(total))
    return perm[:val_size] if split == "val" else perm[val_size:]


def _check_generator(generator: object, *, cpu_only: bool = True) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {generator!r}")
    if cpu_only and generator is not None and generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU generator (shuffling and augmentation run on "
                         f"the CPU copy of the data), got one on {generator.device}")


def _to_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    # Move uint8 (4x fewer bytes), then convert on the target device.
    return images.to(device, non_blocking=True).float().div_(255)


# --- locating files ---------------------------------------------------------------------------

_SUBDIRS = {"fashion-mnist": ("fashion-mnist", "FashionMNIST/raw"), "mnist": ("mnist", "MNIST/raw"),
            "cifar10": ("cifar-10-batches-py",), "cifar100": ("cifar-100-python",),
            "tiny-imagenet": ("tiny-imagenet-200",), "imagefolder": ()}
_CIFAR_FILES = {("cifar10", "train"): tuple(f"data_batch_{i}" for i in range(1, 6)),
                ("cifar10", "test"): ("test_batch",),
                ("cifar100", "train"): ("train",), ("cifar100", "test"): ("test",)}
_HOW_TO_GET = {name: f"python -m rs_lib data --download {name}   (or load(..., download=True))"
               for name in ("fashion-mnist", "mnist", "cifar10", "cifar100")}
_HOW_TO_GET["fashion-mnist"] = ("sudo apt-get install dataset-fashion-mnist   (or: make data; or "
                                + _HOW_TO_GET["fashion-mnist"].replace("   (or ", ", or "))
_HOW_TO_GET["imagefolder"] = "pass root= a folder holding train/<class>/<image>, test/<class>/..."
_HOW_TO_GET["tiny-imagenet"] = ("download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it "
                                "into $RS_DATA (or data/), which gives tiny-imagenet-200/")


def _files(name: str, part: str, directory: Path) -> list[Path] | None:
    """The files of ``part`` in ``directory`` (plain IDX preferred over .gz), or None if absent."""
    if name in ("mnist", "fashion-mnist"):
        stem = "train" if part == "train" else "t10k"
        found = []
        for kind in ("images-idx3", "labels-idx1"):
            options = [directory / f"{stem}-{kind}-ubyte{ext}" for ext in ("", ".gz")]
            found.append(next((p for p in options if p.is_file()), None))
        return found if all(found) else None
    if name == "imagefolder":
        folders = [directory / ("train" if part == "train" else "test"), directory / "val"]
        return next(([f] for f in folders if f.is_dir()), None)
    if name == "tiny-imagenet":
        # the list of wnids and the part's label source; the images are found from them
        found = [directory / "wnids.txt",
                 directory / "train" if part == "train" else directory / "val" / "val_annotations.txt"]
        return found if found[0].is_file() and found[1].exists() else None
    found = [directory / f for f in _CIFAR_FILES[name, part]]
    return found if all(p.is_file() for p in found) else None


def _search_dirs(name: str, base: Path | None) -> tuple[Path, list[Path]]:
    """Where ``name`` is looked for.  A root given explicitly is searched alone (never a silent
    fallback to the system copy); ``$RS_DATA`` and ``<repo>/data`` fall back to it."""
    if base is not None:
        return base, [base / s for s in _SUBDIRS[name]] + [base]
    base = Path(os.environ["RS_DATA"]) if os.environ.get("RS_DATA") else REPO_DATA
    return base, [base / s for s in _SUBDIRS[name]] + [base, *SYSTEM_DIRS.get(name, ())]


def _locate(name: str, part: str, base: Path | None, download: bool) -> Path:
    explicit = base is not None
    base, dirs = _search_dirs(name, base)
    found = next((d for d in dirs if _files(name, part, d)), None)
    if found is None and download and name in ("mnist", "fashion-mnist", "cifar10", "cifar100"):
        _download_with_torchvision(name, base)
        found = next((d for d in dirs if _files(name, part, d)), None)
    if found is None:
        stem = "train" if part == "train" else "t10k"
        wanted = (f"{stem}-{{images-idx3,labels-idx1}}-ubyte[.gz]" if "mnist" in name else
                  "train/ and test/ (or val/)" if name == "imagefolder" else
                  "wnids.txt, train/ and val/val_annotations.txt" if name == "tiny-imagenet" else
                  ", ".join(_CIFAR_FILES[name, part]))
        where = f" in the data root {str(base)!r} given explicitly" if explicit else ""
        raise DatasetNotFoundError(
            f"{name} not found{where} (no {wanted}); searched:\n" + "".join(f"  {d}\n" for d in dirs)
            + f"To get it: {_HOW_TO_GET[name]}\n(or point root= or $RS_DATA at a folder with it)")
    return found


def _download_with_torchvision(name: str, base: Path) -> None:
    from torchvision import datasets
    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST,
           "cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    base.mkdir(parents=True, exist_ok=True)
    try:
        for train in (True, False):
            cls(str(base), train=train, download=True)
    except Exception as error:  # offline, proxy, checksum: all end the same way for the user
        raise DatasetNotFoundError(f"downloading {name} into {base} failed: {error}\n"
                                   f"To get it: {_HOW_TO_GET[name]}") from error


# --- run identity: the data fingerprint -------------------------------------------------------

def fingerprint(name: str, *, root: str | Path | None = None, seed: int = 0) -> str:
    """A digest (16 hex digits) of the data a training run on ``name`` reads: the files of its
    training part (train and val both come from them), found as in :func:`load`, or, for
    ``synthetic*``, the generated tensors.  Each file enters as (name without its folder, MD5 of
    its bytes), so a copy of the same files elsewhere has the same fingerprint.

    When the files are missing and no ``root`` was given, a dataset with published checksums
    (torchvision's MD5 lists of the official MNIST, Fashion-MNIST, CIFAR-10/100 files) gets the
    fingerprint of its official files: a machine without the data (a planner, or a laptop
    rendering a store copied from a GPU box) finds the runs trained on the official release, and
    files whose bytes differ (e.g. Debian's recompressed Fashion-MNIST) have their own.  Otherwise
    raises :class:`DatasetNotFoundError` (a planner can catch it)."""
    info = dataset_info(name, root=root)
    base = check.directory("root", root) if root is not None else None
    check.integer("seed", seed, low=0, high=2**32 - 1)
    if info.name.startswith("synthetic"):
        digest = hashlib.sha256(f"{info.name}\0".encode())
        images, labels = _synthetic_part(info.name, "train", seed)
        digest.update(images.numpy().tobytes())
        digest.update(labels.numpy().tobytes())
        return digest.hexdigest()[:16]
    try:
        directory = base if name == "imagefolder" else _locate(name, "train", base, False)
    except DatasetNotFoundError:
        official = official_train_md5(name)
        if base is not None or official is None:
            raise
        return _combine(info.name, official)
    files = _files(name, "train", directory)
    if files is None:
        _locate(name, "train", base, False)  # raises with the message
    cache = _FingerprintCache.load()
    entries = []
    for f in files:
        members = sorted(p for p in f.rglob("*") if p.is_file()) if f.is_dir() else [f]
        entries += [((member.relative_to(f.parent) if f.is_dir() else Path(member.name)).as_posix(),
                     cache.digest(member)) for member in members]
    cache.save()
    return _combine(info.name, entries)


def _combine(name: str, entries: Sequence[tuple[str, str]]) -> str:
    digest = hashlib.sha256(f"{name}\0".encode())
    for label, md5 in entries:
        digest.update(f"{label}\0{md5}\0".encode())
    return digest.hexdigest()[:16]


def official_train_md5(name: str) -> list[tuple[str, str]] | None:
    """(file name, MD5) of the official release's training files, from torchvision's own lists,
    in the order :func:`fingerprint` reads them; None for a dataset without published checksums."""
    from torchvision import datasets

    if name in ("mnist", "fashion-mnist"):
        cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
        md5 = dict(cls.resources if isinstance(cls.resources[0], tuple) else
                   [(url.rsplit("/", 1)[-1], h) for url, h in cls.resources])
        return [(f, md5[f]) for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")]
    if name in ("cifar10", "cifar100"):
        md5 = dict((datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100).train_list)
        return [(f, md5[f]) for f in _CIFAR_FILES[name, "train"]]
    return None


class _FingerprintCache:
    """MD5 of data files (the digest the datasets' publishers list) keyed by (resolved path, size,
    mtime), kept in one JSON file; an unreadable or unwritable cache only costs recomputation."""

    _memory: dict[str, str] = {}

    def __init__(self, path: Path, entries: dict[str, str]) -> None:
        self.path, self.entries, self.changed = path, entries, False

    @classmethod
    def load(cls) -> _FingerprintCache:
        base = Path(os.environ["RS_CACHE"]) if os.environ.get("RS_CACHE") else Path.home() / ".cache" / "rs_lib"
        path = base / "data_md5.json"
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            entries = {}
        return cls(path, entries if isinstance(entries, dict) else {})

    def digest(self, path: Path) -> str:
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in self.entries and key in self._memory:
            self.entries[key], self.changed = self._memory[key], True
        if key not in self.entries:
            md5 = hashlib.md5(usedforsecurity=False)
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    md5.update(block)
            self.entries[key] = md5.hexdigest()
            self.changed = True
        type(self)._memory[key] = self.entries[key]
        return self.entries[key]

    def save(self) -> None:
        if not self.changed:
            return
        from .store import atomic_write_bytes
        for key in list(self.entries):  # forget files rewritten or removed since
            name, size, mtime = key.rsplit("|", 2)
            try:
                stat = os.stat(name)
                stale = (stat.st_size, stat.st_mtime_ns) != (int(size), int(mtime))
            except (OSError, ValueError):
                stale = True
            if stale:
                del self.entries[key]
        try:
            atomic_write_bytes(self.path, json.dumps(self.entries, indent=0).encode())
        except OSError:
            pass


# --- reading files ----------------------------------------------------------------------------

def _read_part(name: str, part: str, base: Path | None, download: bool, seed: int,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    if name.startswith("synthetic"):
        return _synthetic_part(name, part, seed)
    directory = base if name == "imagefolder" else _locate(name, part, base, download)
    files = _files(name, part, directory)
    if files is None:
        _locate(name, part, base, False)  # raises with the message
    stamp = tuple((str(f), f.stat().st_mtime_ns) for f in files)
    return _parse(name, part, stamp)


@functools.lru_cache(maxsize=8)
def _synthetic_part(name: str, part: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    info = dataset_info(name)
    data = make_synthetic(size=SYNTHETIC_SIZES[part], shape=info.shape,
                          num_classes=info.num_classes, seed=seed, part=part)
    return data.images, data.labels


@functools.lru_cache(maxsize=4)  # full CIFAR-100 train is 150 MB
def _parse(name: str, part: str, stamp: tuple[tuple[str, int], ...],
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Parse once per process; ``stamp`` (paths, mtimes) invalidates on rewritten files."""
    paths = [Path(p) for p, _ in stamp]
    if name in ("mnist", "fashion-mnist"):
        images, labels = read_idx(paths[0])[:, None], read_idx(paths[1])
    elif name == "imagefolder":
        images, labels = _read_imagefolder(paths[0])
    elif name == "tiny-imagenet":
        images, labels = _read_tiny_imagenet(paths[0], paths[1], part)
    else:
        key = b"labels" if name == "cifar10" else b"fine_labels"
        batches_ = [_unpickle(p) for p in paths]
        images = np.concatenate([np.asarray(b[b"data"], np.uint8).reshape(-1, 3, 32, 32)
                                 for b in batches_])
        labels = np.concatenate([np.asarray(b[key], np.int64) for b in batches_])
    if len(images) != len(labels):
        raise ValueError(f"{name} {part}: {len(images)} images but {len(labels)} labels in {paths}")
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64))


def read_idx(path: str | Path) -> np.ndarray:
    """A uint8 IDX file (``.gz`` or plain) as a writable array of its stated dimensions."""
    fix = "replace it with a good copy (e.g. re-download the dataset)"
    try:
        raw = gzip.decompress(Path(path).read_bytes()) if str(path).endswith(".gz") \
            else Path(path).read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise ValueError(f"{path} is not a readable gzip file ({err}); {fix}") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not a uint8 IDX file (magic {raw[:4].hex()}); {fix}")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(dims):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} values (truncated?); {fix}")
    return data.reshape(dims).copy()


def _unpickle(path: Path) -> dict:
    # The CIFAR format is a pickle; only load files you trust (as with torchvision).
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} is not a readable CIFAR batch ({err}); replace it with a good copy "
                         "(python -m rs_lib data --download ...)") from None
    if not isinstance(batch, dict) or b"data" not in batch:
        raise ValueError(f"{path} is not a CIFAR batch (no b'data' entry); replace it with a good copy")
    return batch


def _imagefolder_info(root: Path) -> DatasetInfo:
    from torchvision.datasets import ImageFolder
    folder = ImageFolder(str(root / "train")) if (root / "train").is_dir() else None
    if folder is None or not folder.samples:
        raise DatasetNotFoundError(f"imagefolder: no images in {root / 'train'}\n"
                                   f"To get it: {_HOW_TO_GET['imagefolder']}")
    h, w, c = _rgb(folder.samples[0][0]).shape
    return DatasetInfo("imagefolder", len(folder.classes), (c, h, w), _IMAGENET_MEAN,
                       _IMAGENET_STD, tuple(folder.classes), augment="flip")


def _read_imagefolder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """All images of one ImageFolder tree, in a fixed shuffled order (class-sorted files would
    make every prefix ``n`` a single class). Class indices follow the sorted train/ classes."""
    from torchvision.datasets import ImageFolder
    classes = _imagefolder_info(folder.parent).classes
    tree = ImageFolder(str(folder))
    if tree.classes != list(classes):
        raise ValueError(f"{folder} and {folder.parent / 'train'} hold different classes")
    images = [_rgb(p) for p, _ in tree.samples]
    if len({a.shape for a in images}) > 1:
        raise ValueError(f"images in {folder} differ in size; resize them to one size first")
    order = np.random.RandomState(0).permutation(len(images))
    return (np.stack(images).transpose(0, 3, 1, 2)[order],
            np.asarray([t for _, t in tree.samples], np.int64)[order])


def _read_tiny_imagenet(wnids: Path, source: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """Tiny ImageNet as unzipped: labels are indices into ``wnids.txt``; train images are
    ``train/<wnid>/images/*.JPEG`` (read in sorted order, then in a fixed shuffled order so that a
    prefix ``n`` is not one class), val images are listed in ``val/val_annotations.txt``."""
    classes = wnids.read_text().split()
    if len(classes) != 200 or len(set(classes)) != 200:
        raise ValueError(f"{wnids} must list 200 distinct wnids, found {len(set(classes))}")
    index = {wnid: k for k, wnid in enumerate(classes)}
    if part == "train":
        files = [(p, index[w]) for w in classes for p in sorted((source / w / "images").glob("*.JPEG"))]
    else:
        files = []
        for line in source.read_text().splitlines():
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index:
                raise ValueError(f"{source}: bad line {line!r} (want file<TAB>wnid<TAB>box...)")
            files.append((source.parent / "images" / fields[0], index[fields[1]]))
    if not files:
        raise DatasetNotFoundError(f"tiny-imagenet: no {part} images under {source}")
    images = np.stack([_rgb(str(p)) for p, _ in files])
    if images.shape[1:] != (64, 64, 3):
        raise ValueError(f"tiny-imagenet images must be 64x64 RGB, got {images.shape[1:]}")
    labels = np.asarray([k for _, k in files], np.int64)
    order = np.random.RandomState(0).permutation(len(files)) if part == "train" else np.arange(len(files))
    return images.transpose(0, 3, 1, 2)[order], labels[order]


def write_tiny_imagenet(directory: str | Path, images: np.ndarray | torch.Tensor,
                        labels: np.ndarray | torch.Tensor, *, part: str = "train",
                        wnids: Sequence[str] | None = None) -> Path:
    """Write Tiny ImageNet's layout (JPEG files, ``wnids.txt``, ``val_annotations.txt``) into
    ``directory``/tiny-imagenet-200 for tests and demos; ``images`` uint8 (N, 3, 64, 64), ``labels``
    indices into ``wnids`` (default n00000000..n00000199)."""
    from PIL import Image
    check.choice("part", part, ("train", "test"))
    wnids = list(wnids) if wnids is not None else [f"n{k:08d}" for k in range(200)]
    images, labels = np.asarray(images, np.uint8), np.asarray(labels, np.int64)
    if images.shape[1:] != (3, 64, 64) or len(images) != len(labels):
        raise ValueError(f"images must be (N, 3, 64, 64) with N labels, got {images.shape}, {labels.shape}")
    root = Path(directory) / "tiny-imagenet-200"
    root.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    lines = []
    for k, (image, label) in enumerate(zip(images, labels)):
        wnid = wnids[label]
        folder = root / "train" / wnid / "images" if part == "train" else root / "val" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{wnid}_{k}.JPEG" if part == "train" else f"val_{k}.JPEG"
        Image.fromarray(image.transpose(1, 2, 0)).save(folder / name, format="JPEG", quality=95)
        lines.append(f"{name}\t{wnid}\t0\t0\t63\t63\n")
    if part == "test":
        (root / "val" / "val_annotations.txt").write_text("".join(lines))
    else:
        (root / "train").mkdir(exist_ok=True)
    return root


def _rgb(path: str) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


# --- writers of the real formats (tests, demos) -----------------------------------------------

def write_idx(path: str | Path, array: np.ndarray | torch.Tensor) -> Path:
    """Write a uint8 array as an IDX file (gzipped if ``path`` ends in .gz)."""
    data = np.ascontiguousarray(np.asarray(array))
    if data.dtype != np.uint8 or data.ndim < 1:
        raise ValueError(f"array must be a uint8 array, got {data.dtype} of shape {data.shape}")
    raw = b"\x00\x00\x08" + bytes([data.ndim]) + struct.pack(f">{data.ndim}I", *data.shape) \
        + data.tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, compresslevel=1) if path.suffix == ".gz" else raw)
    return path


def write_mnist_files(directory: str | Path, images: np.ndarray | torch.Tensor,
                      labels: np.ndarray | torch.Tensor, *, part: str = "train",
                      gz: bool = True) -> Path:
    """Write MNIST-format ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` into ``directory``;
    ``images`` uint8 (N, 28, 28) or (N, 1, 28, 28), ``labels`` (N,) in 0..255."""
    check.choice("part", part, ("train", "test"))
    stem, ext = ("train" if part == "train" else "t10k"), (".gz" if gz else "")
    images = np.asarray(images)
    images = images.reshape(len(images), *images.shape[-2:])
    write_idx(Path(directory) / f"{stem}-images-idx3-ubyte{ext}", images)
    write_idx(Path(directory) / f"{stem}-labels-idx1-ubyte{ext}", np.asarray(labels, np.uint8))
    return Path(directory)


def write_cifar_files(directory: str | Path, images: np.ndarray | torch.Tensor,
                      labels: np.ndarray | torch.Tensor, *, part: str = "train",
                      num_classes: int = 10) -> Path:
    """Write ``cifar-10-batches-py`` pickles (``num_classes=10``: data_batch_1..5, test_batch) or
    ``cifar-100-python`` ones (100: train, test) into ``directory``; images uint8 (N, 3, 32, 32)."""
    check.choice("part", part, ("train", "test"))
    check.choice("num_classes", num_classes, (10, 100))
    images, labels, directory = np.asarray(images, np.uint8), np.asarray(labels), Path(directory)
    if images.shape[1:] != (3, 32, 32):
        raise ValueError(f"images must have shape (N, 3, 32, 32), got {images.shape}")
    name, key = ("cifar10", b"labels") if num_classes == 10 else ("cifar100", b"fine_labels")
    directory.mkdir(parents=True, exist_ok=True)
    files = _CIFAR_FILES[name, part]
    for fname, idx in zip(files, np.array_split(np.arange(len(images)), len(files))):
        batch = {b"data": images[idx].reshape(len(idx), 3072), key: labels[idx].tolist(),
                 b"batch_label": fname.encode()}
        with open(directory / fname, "wb") as f:
            pickle.dump(batch, f)
    return directory


def write_stand_in(name: str, directory: str | Path, *, n_train: int = 40, n_test: int = 10,
                   seed: int = 0) -> Path:
    """Generated images of dataset ``name``'s shape and classes (``make_synthetic``), written in
    its real on-disk format into ``directory`` (pass it as ``root=`` or ``$RS_DATA``): a stand-in
    that runs every paper-scale code path (CIFAR-10/100, (Fashion-)MNIST, Tiny ImageNet) without
    the real files. Returns ``directory``."""
    writers = {"cifar10": lambda d, x, y, part: write_cifar_files(d / "cifar-10-batches-py", x, y, part=part),
               "cifar100": lambda d, x, y, part: write_cifar_files(d / "cifar-100-python", x, y, part=part,
                                                                   num_classes=100),
               "mnist": lambda d, x, y, part: write_mnist_files(d / "mnist", x, y, part=part),
               "fashion-mnist": lambda d, x, y, part: write_mnist_files(d / "fashion-mnist", x, y, part=part),
               "tiny-imagenet": lambda d, x, y, part: write_tiny_imagenet(d, x, y, part=part)}
    check.choice("name", name, sorted(writers))
    check.positive_int("n_train", n_train)
    check.positive_int("n_test", n_test)
    info, directory = dataset_info(name), Path(directory)
    for part, size in (("train", n_train), ("test", n_test)):
        images = make_synthetic(size=size, shape=info.shape, num_classes=info.num_classes, seed=seed, part=part)
        writers[name](directory, images.images.numpy(), images.labels.numpy(), part)
    return directory
