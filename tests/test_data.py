"""basisn.data: fetching and verifying Fashion-MNIST, deterministic loaders, CIFAR-100 and ImageNet readers."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from basisn import data
from basisn.cli import main as cli_main

FILES = list(data.FASHION_MNIST_MD5)


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes, as in the MNIST family."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fake_fashion_mnist(folder: Path, n_train: int = 200, n_test: int = 50, seed: int = 0) -> dict[str, str]:
    """Tiny Fashion-MNIST-format files in ``folder``; returns their MD5 table (to stand in for the real one)."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte.gz": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": (np.arange(n_test) * 7) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    md5s = {}
    for name, array in arrays.items():
        blob = gzip.compress(idx_bytes(array), mtime=0)
        (folder / name).write_bytes(blob)
        md5s[name] = hashlib.md5(blob).hexdigest()
    return md5s


@pytest.fixture
def no_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep tests off the real mirror variable and off the network."""
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)


@pytest.fixture
def fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """data/raw holding fake Fashion-MNIST files that the module accepts as the real ones."""
    root = tmp_path / "raw"
    md5s = write_fake_fashion_mnist(root / data.FASHION_MNIST_DIRNAME)
    monkeypatch.setattr(data, "FASHION_MNIST_MD5", md5s)
    return root


# ------------------------------------------------------------------------------------------------ fetch and verify


def test_fetch_from_mirror_verifies_and_is_idempotent(tmp_path: Path, no_sources: None) -> None:
    mirror = tmp_path / "mirror"
    md5s = write_fake_fashion_mnist(mirror)
    root, lines = tmp_path / "raw", []
    used = data.fetch_fashion_mnist(root, mirror=mirror, debian_dir=None, download=False, md5s=md5s, log=lines.append)
    assert set(used) == set(md5s) and all(source.startswith("mirror") for source in used.values())
    for name in md5s:
        assert (root / data.FASHION_MNIST_DIRNAME / name).read_bytes() == (mirror / name).read_bytes()
    assert not [p for p in (root / data.FASHION_MNIST_DIRNAME).iterdir() if p.name not in md5s]  # no temp files
    stamps = {p.name: p.stat().st_mtime_ns for p in (root / data.FASHION_MNIST_DIRNAME).iterdir()}

    lines.clear()
    again = data.fetch_fashion_mnist(root, mirror=None, debian_dir=None, download=False, md5s=md5s, log=lines.append)
    assert set(again.values()) == {"already present"}
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (root / data.FASHION_MNIST_DIRNAME).iterdir()}


def test_fetch_replaces_a_corrupt_file_from_the_next_good_source(tmp_path: Path, no_sources: None) -> None:
    good = tmp_path / "good"
    md5s = write_fake_fashion_mnist(good)
    bad = tmp_path / "bad"
    write_fake_fashion_mnist(bad, n_train=190, n_test=40, seed=1)  # same names and format, other bytes
    root = tmp_path / "raw"
    target = root / data.FASHION_MNIST_DIRNAME / FILES[0]
    target.parent.mkdir(parents=True)
    target.write_bytes(b"truncated")
    used = data.fetch_fashion_mnist(root, mirror=bad, debian_dir=good, download=False, md5s=md5s, log=lambda _: None)
    assert all("Debian" in source for source in used.values())  # the mirror's files were rejected by MD5
    assert hashlib.md5(target.read_bytes()).hexdigest() == md5s[FILES[0]]


def test_fetch_failure_names_the_file_and_every_source(tmp_path: Path, no_sources: None) -> None:
    mirror = tmp_path / "mirror"
    md5s = write_fake_fashion_mnist(mirror)
    (mirror / FILES[1]).write_bytes(b"not the file")

    def offline(name: str, folder: Path, expected: str) -> bytes:
        raise OSError("network unreachable")

    with pytest.raises(data.DataError) as caught:
        data.fetch_fashion_mnist(
            tmp_path / "raw", mirror=mirror, debian_dir=None, md5s=md5s, downloader=offline, log=lambda _: None
        )
    message = str(caught.value)
    assert f"{FILES[1]}: mirror" in message and "MD5" in message and "network unreachable" in message
    assert FILES[0] not in message.split("\n")[1]  # only the failing file is listed as failing
    for needle in (data.MIRROR_ENV, "apt-get install -y dataset-fashion-mnist", "basisn data fetch", "internet"):
        assert needle in message
    # the three good files were still written; the bad one was not
    folder = tmp_path / "raw" / data.FASHION_MNIST_DIRNAME
    assert sorted(p.name for p in folder.iterdir()) == sorted(n for n in FILES if n != FILES[1])


def test_cli_fetch_uses_the_mirror_variable_and_verify_reports_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror = tmp_path / "mirror" / data.FASHION_MNIST_DIRNAME  # a copy of data/raw also works as a mirror
    md5s = write_fake_fashion_mnist(mirror)
    monkeypatch.setattr(data, "FASHION_MNIST_MD5", md5s)
    monkeypatch.setenv(data.MIRROR_ENV, str(tmp_path / "mirror"))
    root = tmp_path / "raw"
    assert cli_main(["data", "fetch", "--root", str(root), "--no-download"]) == 0
    assert "mirror" in capsys.readouterr().out
    assert cli_main(["data", "verify", "--root", str(root)]) == 0

    (root / data.FASHION_MNIST_DIRNAME / FILES[2]).unlink()
    assert cli_main(["data", "verify", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert FILES[2] in err and "missing" in err and "basisn data fetch" in err
    assert "dvc checkout --force data.dvc" in err


def test_verify_names_a_mismatching_file_and_the_fix(fake_root: Path) -> None:
    path = fake_root / data.FASHION_MNIST_DIRNAME / FILES[3]
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(data.DataError, match="MD5") as caught:
        data.build_loaders("fashion_mnist", fake_root, 32, seed=0)
    message = str(caught.value)
    assert str(path) in message and data.FASHION_MNIST_MD5[FILES[3]] in message
    assert "basisn data fetch" in message and "dvc" in message


def gzip_member(content: bytes, header: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = compressor.compress(content) + compressor.flush()
    return header + payload + struct.pack("<II", zlib.crc32(content), len(content))


def test_restores_the_original_gzip_header_of_a_repackaged_file(tmp_path: Path, no_sources: None) -> None:
    """Debian's files keep the deflate data but lose the name and time stamp; fetch rebuilds the original bytes."""
    name = FILES[3]
    content = idx_bytes(np.arange(30) % 10)
    mtime = struct.pack("<I", data.UPSTREAM_GZIP_MTIME[name])
    original = gzip_member(content, b"\x1f\x8b\x08\x08" + mtime + b"\x00\x03" + name[:-3].encode() + b"\0")
    repackaged = gzip_member(content, b"\x1f\x8b\x08\x00" + struct.pack("<I", 1591347949) + b"\x00\x03")
    assert data.restore_upstream_gzip(name, repackaged) == original
    assert gzip.decompress(original) == content

    debian = tmp_path / "debian"
    debian.mkdir()
    (debian / name).write_bytes(repackaged)
    lines: list[str] = []
    md5s = {name: hashlib.md5(original).hexdigest()}
    data.fetch_fashion_mnist(tmp_path / "raw", debian_dir=debian, download=False, md5s=md5s, log=lines.append)
    assert (tmp_path / "raw" / data.FASHION_MNIST_DIRNAME / name).read_bytes() == original
    assert "header restored" in lines[0]


def test_read_idx_rejects_a_file_whose_header_and_size_disagree(tmp_path: Path) -> None:
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(10))[:-1]))
    with pytest.raises(data.DataError, match="IDX header"):
        data.read_idx(path)


@pytest.mark.skipif(
    not data.DEBIAN_DIR.is_dir(), reason=f"{data.DEBIAN_DIR} absent (apt-get install dataset-fashion-mnist)"
)
def test_real_fashion_mnist_from_the_debian_package(tmp_path: Path, no_sources: None) -> None:
    used = data.fetch_fashion_mnist(tmp_path, download=False, log=lambda _: None)
    assert all("Debian" in source for source in used.values())
    loaders = data.build_loaders("fashion_mnist", tmp_path, 1000, seed=0)
    assert len(loaders.train.labels) == 60000 and len(loaders.test.labels) == 10000
    assert (loaders.num_classes, loaders.in_channels, loaders.input_size) == (10, 1, (28, 28))
    assert torch.bincount(loaders.test.labels).tolist() == [1000] * 10
    pixels = loaders.train.images.float() / 255
    assert pixels.mean().item() == pytest.approx(data.FASHION_MNIST_MEAN[0], abs=1e-3)
    assert pixels.std().item() == pytest.approx(data.FASHION_MNIST_STD[0], abs=1e-3)


# ------------------------------------------------------------------------------------------------ loaders


def all_batches(loader: data.TensorBatchLoader | data.FolderLoader, epoch: int) -> list[tuple[torch.Tensor, ...]]:
    loader.set_epoch(epoch)
    return list(loader)


def same(a: list[tuple[torch.Tensor, ...]], b: list[tuple[torch.Tensor, ...]]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for p, q in zip(a, b, strict=True) for x, y in zip(p, q))


def test_batches_are_a_function_of_seed_and_epoch_only(fake_root: Path) -> None:
    first = data.build_loaders("fashion_mnist", fake_root, 32, seed=7)
    second = data.build_loaders("fashion_mnist", fake_root, 32, seed=7)
    all_batches(first.train, 0)  # iterating another epoch first must not change epoch 3
    assert same(all_batches(first.train, 3), all_batches(second.train, 3))
    assert not same(all_batches(first.train, 3), all_batches(first.train, 4))
    other_seed = data.build_loaders("fashion_mnist", fake_root, 32, seed=8)
    assert not same(all_batches(first.train, 3), all_batches(other_seed.train, 3))
    state = torch.get_rng_state()
    list(first.train)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is neither used nor disturbed


def test_batch_format_and_length(fake_root: Path) -> None:
    loaders = data.build_loaders("fashion_mnist", fake_root, 64, seed=0)
    batches = list(loaders.train)
    assert len(batches) == len(loaders.train) == 4  # 200 = 3 * 64 + 8
    images, labels = batches[0]
    assert images.shape == (64, 1, 28, 28) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert sum(len(y) for _, y in batches) == 200
    assert (loaders.num_classes, loaders.in_channels, loaders.input_size) == (10, 1, (28, 28))
    assert loaders.class_names[0] == "T-shirt/top"


def test_without_augmentation_batches_are_the_normalised_pixels(fake_root: Path) -> None:
    loaders = data.build_loaders("fashion_mnist", fake_root, 50, seed=0, augment=False)
    loader = loaders.train
    loader.set_epoch(2)
    order = torch.from_numpy(loader.indices())
    images, labels = next(iter(loader))
    expected = (loader.images[order[:50]].float() / 255 - data.FASHION_MNIST_MEAN[0]) / data.FASHION_MNIST_STD[0]
    torch.testing.assert_close(images, expected)
    assert torch.equal(labels, loader.labels[order[:50]])
    assert sorted(order.tolist()) == list(range(200))  # one epoch visits every sample once


def test_test_loader_is_in_file_order_and_complete(fake_root: Path) -> None:
    loaders = data.build_loaders("fashion_mnist", fake_root, 32, seed=3)
    labels = torch.cat([y for _, y in all_batches(loaders.test, 5)])
    assert torch.equal(labels, loaders.test.labels)


def test_augmentation_is_a_padded_random_crop_and_flip() -> None:
    images = torch.randint(0, 256, (64, 3, 8, 10), dtype=torch.uint8)
    out = data.augment_batch(images, 2, True, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)  # the same draws, in the documented order
    dy = torch.randint(0, 5, (64, 1), generator=g)
    dx = torch.randint(0, 5, (64, 1), generator=g)
    flip = torch.rand(64, 1, generator=g) < 0.5
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(64):
        crop = padded[i, :, dy[i, 0] : dy[i, 0] + 8, dx[i, 0] : dx[i, 0] + 10]
        assert torch.equal(out[i], crop.flip(2) if flip[i, 0] else crop)
    assert flip.any() and not flip.all() and (dy != 2).any()


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_shards_are_disjoint_equal_and_cover_the_set(fake_root: Path, world_size: int) -> None:
    train, test = [], []
    for rank in range(world_size):
        loaders = data.build_loaders("fashion_mnist", fake_root, 16, seed=1, rank=rank, world_size=world_size)
        loaders.train.set_epoch(2)
        train.append(loaders.train.indices())
        test.append(torch.cat([y for _, y in loaders.test]))
        assert len(loaders.train) == len(list(loaders.train))
    sizes = {len(s) for s in train}
    assert sizes == {-(-200 // world_size)}  # equal shard sizes, padded like DistributedSampler
    everything = np.concatenate(train)
    assert set(everything.tolist()) == set(range(200))
    assert len(everything) - len(set(everything.tolist())) == (-200) % world_size  # only the padding repeats
    # evaluation shards: disjoint, unpadded, together exactly the test set
    assert sum(len(t) for t in test) == 50
    assert sorted(torch.cat(test).tolist()) == sorted(loaders.test.labels.tolist())


def test_subset_is_class_balanced_and_fixed_by_the_seed(fake_root: Path) -> None:
    a = data.build_loaders("fashion_mnist", fake_root, 16, seed=4, subset=40, test_subset=20)
    b = data.build_loaders("fashion_mnist", fake_root, 16, seed=4, subset=40, test_subset=20)
    c = data.build_loaders("fashion_mnist", fake_root, 16, seed=5, subset=40, test_subset=20)
    assert torch.bincount(a.train.labels, minlength=10).tolist() == [4] * 10
    assert torch.bincount(a.test.labels, minlength=10).tolist() == [2] * 10
    assert torch.equal(a.train.images, b.train.images)
    assert not torch.equal(a.train.images, c.train.images)
    assert torch.equal(a.test.images, c.test.images)  # the test subset does not depend on the training seed


def test_balanced_subset_fills_from_other_classes_when_one_is_small() -> None:
    labels = np.array([0] * 2 + [1] * 50 + [2] * 50)
    picked = data.balanced_subset(labels, 30, seed=0)
    assert len(set(picked.tolist())) == 30
    assert np.bincount(labels[picked]).tolist() == [2, 14, 14]


def test_a_singleton_last_batch_is_dropped_in_training_only() -> None:
    assert data.batch_bounds(65, 32, drop_singleton_tail=True) == [(0, 32), (32, 64)]
    assert data.batch_bounds(65, 32, drop_singleton_tail=False)[-1] == (64, 65)
    assert data.batch_bounds(1, 32, drop_singleton_tail=True) == [(0, 1)]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"dataset": "mnist"}, "unknown dataset 'mnist'; allowed: fashion_mnist, cifar100, imagenet"),
        ({"batch_size": 0}, "batch_size 0"),
        ({"rank": 2, "world_size": 2}, "rank 2"),
        ({"subset": 0}, "subset 0"),
        ({"seed": -1}, "seed -1"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(tmp_path: Path, kwargs: dict, needle: str) -> None:
    args = {"dataset": "fashion_mnist", "root": tmp_path / "nothing", "batch_size": 8, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=needle):
        data.build_loaders(**args)


def test_missing_fashion_mnist_says_how_to_fetch_it(tmp_path: Path) -> None:
    with pytest.raises(data.DataError, match="missing.*basisn data fetch"):
        data.build_loaders("fashion_mnist", tmp_path, 8, seed=0)


# ------------------------------------------------------------------------------------------------ CIFAR-100


def write_fake_cifar100(root: Path, n_train: int, n_test: int, bytes_keys: bool = True) -> dict[str, np.ndarray]:
    """cifar-100-python/{train,test,meta} with the real files' keys (Python-2 pickles load them as bytes)."""
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [(i * 3) % 100 for i in range(n)]
        entry = {
            key("filenames"): [f"img_{i}.png".encode() for i in range(n)],
            key("batch_label"): f"{split} batch".encode(),
            key("fine_labels"): fine,
            key("coarse_labels"): [f // 5 for f in fine],
            key("data"): pixels,
        }
        (folder / split).write_bytes(pickle.dumps(entry, protocol=2))
        arrays[split] = pixels
    names = [f"class_{i:02d}".encode() for i in range(100)]
    meta = {key("fine_label_names"): names, key("coarse_label_names"): [b"super"] * 20}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return arrays


@pytest.mark.parametrize("bytes_keys", [True, False])
def test_cifar100_reads_the_torchvision_layout(tmp_path: Path, bytes_keys: bool) -> None:
    arrays = write_fake_cifar100(tmp_path, 120, 30, bytes_keys)
    loaders = data.build_loaders("cifar100", tmp_path, 32, seed=0)
    assert (loaders.num_classes, loaders.in_channels, loaders.input_size) == (100, 3, (32, 32))
    assert loaders.class_names[:2] == ["class_00", "class_01"]
    images, labels = next(iter(loaders.train))
    assert images.shape == (32, 3, 32, 32) and labels.dtype == torch.int64
    test_images, test_labels = next(iter(loaders.test))
    assert test_labels.tolist() == [(i * 3) % 100 for i in range(30)]
    # rows of b"data" are 1024 red, then green, then blue values, each row-major
    red = torch.from_numpy(arrays["test"][0, :1024].reshape(32, 32)).float() / 255
    mean, std = data.CIFAR100_MEAN[0], data.CIFAR100_STD[0]
    torch.testing.assert_close(test_images[0, 0], (red - mean) / std)


def test_cifar100_missing_files_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(data.DataError, match="cifar-100-python/train: missing"):
        data.build_loaders("cifar100", tmp_path, 8, seed=0)


# ------------------------------------------------------------------------------------------------ ImageNet folder


def write_fake_imagenet(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    layout = {"train": {"n01": 5, "n02": 4, "n03": 5}, "val": {"n01": 2, "n03": 3}}  # n02 missing in val
    for split, classes in layout.items():
        for wnid, count in classes.items():
            (root / split / wnid).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)
                suffix = "JPEG" if i % 2 else "png"
                Image.fromarray(pixels).save(root / split / wnid / f"{wnid}_{i}.{suffix}")


def test_imagenet_folder_loaders(tmp_path: Path) -> None:
    write_fake_imagenet(tmp_path / "imagenet")
    loaders = data.build_loaders("imagenet", tmp_path, 4, seed=0, crop_size=16, resize_size=18)
    assert (loaders.num_classes, loaders.in_channels, loaders.input_size) == (3, 3, (16, 16))
    assert loaders.class_names == ["n01", "n02", "n03"]
    train = all_batches(loaders.train, 1)
    assert len(train) == len(loaders.train) == 4  # 14 images: 4 + 4 + 4 + 2
    assert train[0][0].shape == (4, 3, 16, 16) and train[0][0].dtype == torch.float32
    assert train[0][1].dtype == torch.int64
    val_labels = torch.cat([y for _, y in loaders.test]).tolist()
    assert val_labels == [0, 0, 2, 2, 2]  # labelled by the train folders although n02 has no val images
    again = data.build_loaders("imagenet", tmp_path / "imagenet", 4, seed=0, crop_size=16, resize_size=18)
    assert same(train, all_batches(again.train, 1))
    assert not same(train, all_batches(again.train, 2))


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs for worker processes")
def test_imagenet_batches_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    write_fake_imagenet(tmp_path)
    kwargs = {"seed": 3, "crop_size": 16, "resize_size": 18}
    inline = data.build_loaders("imagenet", tmp_path, 4, workers=0, **kwargs)
    pooled = data.build_loaders("imagenet", tmp_path, 4, workers=2, **kwargs)
    assert same(all_batches(inline.train, 1), all_batches(pooled.train, 1))


def test_imagenet_missing_folder_is_explained(tmp_path: Path) -> None:
    with pytest.raises(data.DataError, match="train and .*val"):
        data.build_loaders("imagenet", tmp_path, 8, seed=0)


def test_sample_labels_are_the_labels_a_pass_yields_without_reading_an_image(
    tmp_path: Path, fake_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data stage counts classes on every `dvc repro`: from the index, never by decoding the images."""
    write_fake_imagenet(tmp_path / "imagenet")
    folder = data.build_loaders("imagenet", tmp_path, 4, seed=0, crop_size=16, resize_size=18)
    tensors = data.build_loaders("fashion_mnist", fake_root, 32, seed=0)
    for loader in (folder.train, folder.test, tensors.train, tensors.test):
        loader.set_epoch(1)
        expected = torch.cat([labels for _, labels in loader])
        assert torch.equal(loader.sample_labels(), expected)
    monkeypatch.setattr(folder.train.loader.dataset.folder, "loader", lambda path: pytest.fail(f"opened {path}"))
    assert torch.bincount(folder.train.sample_labels()).tolist() == [5, 4, 5]
