"""rs_lib.data: the readers on small files written in the real formats, the fixed splits, the
batch iterator and its augmentation, the synthetic set and the argument checks."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rs_lib import data


def _random_images(n, shape, seed=0):
    return np.random.RandomState(seed).randint(0, 256, size=(n, *shape), dtype=np.uint8)


@pytest.fixture
def no_default_data(tmp_path, monkeypatch):
    """Point $RS_DATA at an empty folder and hide the system Fashion-MNIST."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("RS_DATA", str(empty))
    monkeypatch.setattr(data, "SYSTEM_DIRS", {})
    return empty


@pytest.fixture
def cifar_root(tmp_path):
    """A root with cifar-10-batches-py (120 train, 30 test) and cifar-100-python (90, 20)."""
    rng = np.random.RandomState(1)
    for folder, classes, n_train, n_test in (("cifar-10-batches-py", 10, 120, 30),
                                             ("cifar-100-python", 100, 90, 20)):
        for part, n in (("train", n_train), ("test", n_test)):
            data.write_cifar_files(tmp_path / folder, _random_images(n, (3, 32, 32), n),
                                   rng.randint(0, classes, n), part=part, num_classes=classes)
    return tmp_path


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name, subdir",
                         [("mnist", "mnist"), ("fashion-mnist", "FashionMNIST/raw")])
def test_idx_files_round_trip_through_load(tmp_path, name, subdir, gz):
    x_train, y_train = _random_images(50, (28, 28), 1), np.arange(50) % 10
    x_test, y_test = _random_images(20, (28, 28), 2), (np.arange(20) * 3) % 10
    data.write_mnist_files(tmp_path / subdir, x_train, y_train, part="train", gz=gz)
    data.write_mnist_files(tmp_path / subdir, x_test, y_test, part="test", gz=gz)
    test = data.load(name, "test", root=tmp_path)
    assert test.images.dtype == torch.uint8 and test.images.shape == (20, 1, 28, 28)
    assert np.array_equal(test.images[:, 0].numpy(), x_test)
    assert np.array_equal(test.labels.numpy(), y_test) and test.labels.dtype == torch.int64
    train, val = data.load(name, "train", root=tmp_path), data.load(name, "val", root=tmp_path)
    assert len(train) == 45 and len(val) == 5          # default val_size: 10% of a small set
    together = torch.cat([train.images, val.images])[:, 0].numpy()
    assert sorted(map(bytes, together)) == sorted(map(bytes, x_train))


def test_idx_reader_rejects_truncated_file(tmp_path):
    path = data.write_idx(tmp_path / "x-idx3-ubyte", _random_images(4, (28, 28)))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(path)


def test_cifar10_and_cifar100_pickles_load_with_their_labels(cifar_root):
    test10 = data.load("cifar10", "test", root=cifar_root)
    assert test10.images.shape == (30, 3, 32, 32) and test10.info.num_classes == 10
    assert torch.equal(test10.images, torch.from_numpy(_random_images(30, (3, 32, 32), 30)))
    assert len(data.load("cifar10", "train", root=cifar_root)) == 108   # 120 over 5 batch files
    test100 = data.load("cifar100", "test", root=cifar_root)
    assert test100.images.shape == (20, 3, 32, 32) and len(test100.info.classes) == 100
    assert int(test100.labels.max()) >= 10                             # fine labels, not coarse
    assert data.dataset_info("cifar100").mean == (0.5071, 0.4867, 0.4408)


def test_val_split_is_disjoint_from_train_and_fixed(tmp_path):
    images = np.zeros((200, 28, 28), np.uint8)
    images.reshape(200, -1)[:, :2] = np.stack([np.arange(200) // 256, np.arange(200) % 256], 1)
    data.write_mnist_files(tmp_path, images, np.arange(200) % 10)
    ids = lambda d: set((d.images[:, 0, 0, 0].int() * 256 + d.images[:, 0, 0, 1].int()).tolist())
    train = data.load("mnist", "train", root=tmp_path)
    val = data.load("mnist", "val", root=tmp_path)
    assert not ids(train) & ids(val) and ids(train) | ids(val) == set(range(200))
    data._parse.cache_clear()                             # a fresh parse gives the same split
    assert torch.equal(data.load("mnist", "val", root=tmp_path).images, val.images)
    assert len(data.load("mnist", "val", root=tmp_path, val_size=50)) == 50


def test_subsets_by_count_are_prefixes(tmp_path):
    data.write_mnist_files(tmp_path, _random_images(100, (28, 28)), np.arange(100) % 10)
    full = data.load("mnist", "train", root=tmp_path)
    small = data.load("mnist", "train", root=tmp_path, n=7)
    assert torch.equal(small.images, full.images[:7]) and torch.equal(small.labels, full.labels[:7])
    assert torch.equal(full.subset([3, 1]).images, full.images[[3, 1]])


def test_full_set_default_val_size_is_5000():
    idx = data._split_indices(60_000, "val", None, 0)
    assert len(idx) == 5000 and len(data._split_indices(60_000, "train", None, 0)) == 55_000


def test_missing_data_error_names_searched_paths_and_fix(no_default_data, tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load("fashion-mnist", "test")
    message = str(error.value)
    assert str(no_default_data / "FashionMNIST" / "raw") in message
    assert str(no_default_data / "fashion-mnist") in message
    assert "apt-get install dataset-fashion-mnist" in message and "make data" in message
    with pytest.raises(FileNotFoundError, match="--download cifar10") as error:
        data.load("cifar10", "train", root=tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in str(error.value)


def test_locate_finds_the_folder_and_download_skips_present_data(tmp_path, no_default_data):
    folder = data.write_mnist_files(tmp_path / "MNIST" / "raw", _random_images(5, (28, 28)),
                                    np.zeros(5), part="train")
    data.write_mnist_files(folder, _random_images(5, (28, 28)), np.zeros(5), part="test")
    assert data.locate("mnist", root=tmp_path) == folder
    assert data.download("mnist", root=tmp_path) == folder          # present: no network needed
    with pytest.raises(data.DatasetNotFoundError, match="--download cifar100"):
        data.locate("cifar100")
    with pytest.raises(ValueError, match="name"):
        data.locate("svhn")


def test_rewritten_files_are_reparsed(tmp_path):
    data.write_mnist_files(tmp_path, _random_images(10, (28, 28), 1), np.zeros(10), part="test")
    first = data.load("mnist", "test", root=tmp_path)
    data.write_mnist_files(tmp_path, _random_images(10, (28, 28), 2), np.ones(10), part="test")
    for f in tmp_path.iterdir():
        os.utime(f, ns=(1, f.stat().st_mtime_ns + 10**9))
    assert not torch.equal(data.load("mnist", "test", root=tmp_path).labels, first.labels)


def test_tensors_are_floats_in_unit_interval():
    x, y = data.load("synthetic", "test", n=64).tensors()
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and y.dtype == torch.int64


def test_batches_cover_the_set_once_and_repeat_under_one_generator():
    d = data.load("synthetic", "train", n=100)
    out = list(data.batches(d, 32, shuffle=True, generator=torch.Generator().manual_seed(3)))
    assert [len(y) for _, y in out] == [32, 32, 32, 4] == [32] * 3 + [100 - 96]
    assert data.num_batches(100, 32) == 4 and data.num_batches(100, 32, drop_last=True) == 3
    assert len(list(data.batches(d, 32, drop_last=True))) == 3
    labels = torch.cat([y for _, y in out])
    assert torch.equal(labels.sort().values, d.labels.sort().values)
    again = list(data.batches(d, 32, shuffle=True, generator=torch.Generator().manual_seed(3)))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(out, again))
    other = list(data.batches(d, 32, shuffle=True, generator=data.epoch_generator(0, 1)))
    assert not torch.equal(torch.cat([y for _, y in other]), labels)


def test_epoch_generator_depends_on_seed_and_epoch_only():
    draw = lambda s, e: torch.rand(4, generator=data.epoch_generator(s, e))
    assert torch.equal(draw(0, 3), draw(0, 3))
    assert not torch.equal(draw(0, 3), draw(0, 4)) and not torch.equal(draw(0, 3), draw(1, 3))


def test_crop_flip_augmentation_keeps_range_shape_is_deterministic_and_changes_images(cifar_root):
    d = data.load("cifar10", "train", root=cifar_root)
    assert d.info.augment == "crop_flip"
    run = lambda: list(data.batches(d, 50, shuffle=False, augment=True,
                                    generator=torch.Generator().manual_seed(7)))
    plain = list(data.batches(d, 50))
    first, second = run(), run()
    for (xa, ya), (xb, _), (xp, yp) in zip(first, second, plain):
        assert xa.shape == xp.shape and torch.equal(ya, yp)
        assert 0 <= xa.min() and xa.max() <= 1 and torch.equal(xa, xb)
    changed = torch.cat([(xa != xp).flatten(1).any(1) for (xa, _), (xp, _) in zip(first, plain)])
    assert changed.float().mean() > 0.8


def test_crop_flip_matches_pad_crop_flip_by_hand():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = data.augment_batch(x, policy="crop_flip", padding=2, generator=g)
    g.manual_seed(0)
    shift = torch.randint(0, 5, (2, 2), generator=g)
    flip = torch.randint(0, 2, (2,), generator=g).bool()
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        dy, dx = shift[i].tolist()
        crop = padded[i, :, dy:dy + 8, dx:dx + 8]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)
    assert torch.equal(data.augment_batch(x, policy="none"), x)
    flipped = data.augment_batch(x, policy="flip", generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(f, xi) or torch.equal(f, xi.flip(-1)) for f, xi in zip(flipped, x))


def test_mnist_family_has_no_augmentation():
    assert data.dataset_info("fashion-mnist").augment == "none"
    d = data.load("synthetic", "test", n=16)
    (x_aug, _), = data.batches(d, 16, augment=True)
    assert torch.equal(x_aug, d.tensors()[0])


def test_synthetic_is_deterministic_shaped_and_learnable():
    a, b = data.load("synthetic", "train"), data.load("synthetic", "train")
    fresh = data.make_synthetic(size=50, seed=0)
    assert torch.equal(a.images, b.images) and fresh.images.shape == (50, 1, 28, 28)
    assert data.dataset_info("synthetic-3x32x32-5classes").shape == (3, 32, 32)
    assert data.load("synthetic-3x32x32-5classes", "test", n=8).images.shape == (8, 3, 32, 32)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step, (x, y) in enumerate(data.batches(a, 64, shuffle=True, generator=torch.Generator())):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if step == 200:
            break
    x, y = data.load("synthetic", "test").tensors()
    assert (model(x).argmax(1) == y).float().mean() > 0.9


def test_imagefolder_reads_train_and_test_trees(tmp_path):
    from PIL import Image
    for part, count in (("train", 6), ("test", 4)):
        for k, cls in enumerate(("cat", "dog")):
            (tmp_path / part / cls).mkdir(parents=True)
            for i in range(count // 2):
                Image.fromarray(np.full((12, 10, 3), 40 * k + i, np.uint8)).save(
                    tmp_path / part / cls / f"{i}.png")
    info = data.dataset_info("imagefolder", root=tmp_path)
    assert info.shape == (3, 12, 10) and info.classes == ("cat", "dog")
    test = data.load("imagefolder", "test", root=tmp_path)
    assert len(test) == 4 and set(test.labels.tolist()) == {0, 1}
    assert all(int(img[0, 0, 0]) // 40 == lab for img, lab in zip(test.images, test.labels))


def test_tiny_imagenet_reads_the_official_layout(tmp_path):
    # Flat colours (JPEG keeps them within a few levels): image k has value 30k + 10.
    def images(labels):
        return np.stack([np.full((3, 64, 64), 30 * k + 10, np.uint8) for k in range(len(labels))])
    train_labels, val_labels = np.array([0, 0, 1, 1, 199, 199, 5]), np.array([199, 1, 5])
    data.write_tiny_imagenet(tmp_path, images(train_labels), train_labels, part="train")
    data.write_tiny_imagenet(tmp_path, images(val_labels), val_labels, part="test")
    assert (tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt").is_file()
    info = data.dataset_info("tiny-imagenet")
    assert (info.num_classes, info.shape, info.augment) == (200, (3, 64, 64), "flip")
    test = data.load("tiny-imagenet", "test", root=tmp_path)
    assert test.labels.tolist() == [199, 1, 5]                      # val_annotations.txt order
    assert np.abs(test.images.int().numpy() - images(val_labels).astype(int)).max() <= 3
    train = data.load("tiny-imagenet", "train", root=tmp_path, val_size=2)
    val = data.load("tiny-imagenet", "val", root=tmp_path, val_size=2)
    both = sorted(train.labels.tolist() + val.labels.tolist())
    assert both == sorted(train_labels.tolist()) and len(val) == 2
    for img, lab in zip(train.images, train.labels):                # each image kept its own label
        assert train_labels[round((int(img[0, 0, 0]) - 10) / 30)] == lab
    assert data.locate("tiny-imagenet", root=tmp_path) == tmp_path / "tiny-imagenet-200"


def test_missing_tiny_imagenet_says_where_to_get_it(tmp_path, no_default_data):
    with pytest.raises(FileNotFoundError, match="tiny-imagenet-200.zip"):
        data.load("tiny-imagenet", "test", root=tmp_path)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(name="cifar11", split="train"), "name"),
    (dict(name="synthetic", split="validation"), "split"),
    (dict(name="synthetic", split="train", n=0), "n"),
    (dict(name="synthetic", split="test", n=10**6), "n"),
    (dict(name="synthetic", split="train", val_size=6000), "val_size"),
    (dict(name="synthetic", split="train", seed=-1), "seed"),
    (dict(name="synthetic", split="train", download="yes"), "download"),
    (dict(name="imagefolder", split="train"), "root"),
])
def test_bad_load_arguments_raise_value_error_naming_them(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        data.load(kwargs.pop("name"), kwargs.pop("split"), **kwargs)


def test_unknown_name_lists_the_allowed_ones_and_root_must_be_a_directory(tmp_path):
    with pytest.raises(ValueError, match="fashion-mnist, mnist, cifar10, cifar100"):
        data.dataset_info("imagenet")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="root"):
        data.load("mnist", "test", root=tmp_path / "file")


def test_bad_batch_arguments_raise_value_error_naming_them():
    d = data.load("synthetic", "test", n=10)
    for kwargs, argument in ((dict(batch_size=0), "batch_size"),
                             (dict(batch_size=4, generator=3), "generator"),
                             (dict(batch_size=4, shuffle=1), "shuffle")):
        with pytest.raises(ValueError, match=argument):
            data.batches(d, **kwargs)
    with pytest.raises(ValueError, match="policy"):
        data.augment_batch(d.images, policy="cutout")
    with pytest.raises(ValueError, match="indices"):
        d.subset([10])


SYSTEM_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (SYSTEM_FMNIST / "t10k-images-idx3-ubyte.gz").exists(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_loads_from_the_system_folder(no_default_data, monkeypatch):
    monkeypatch.setattr(data, "SYSTEM_DIRS", {"fashion-mnist": (SYSTEM_FMNIST,)})
    d = data.load("fashion-mnist", "test", n=100)
    x, y = d.tensors()
    assert x.shape == (100, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert set(y.tolist()) <= set(range(10)) and len(set(y.tolist())) > 5
    assert abs(x.mean().item() - 0.286) < 0.05
