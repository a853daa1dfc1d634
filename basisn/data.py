"""Datasets: Fashion-MNIST (default, fetched into ``data/raw``), CIFAR-100 and an ImageNet folder.

Two jobs live here:

* ``basisn data fetch`` fills ``data/raw/fashion-mnist/`` with the four original gzipped IDX files, taken from (1) a
  mirror directory named by ``$BASISN_DATA_MIRROR``, (2) Debian's ``dataset-fashion-mnist`` package, or (3)
  torchvision's download. Every file is checked against the MD5 that torchvision publishes, so the bytes on disk
  (and the hash DVC records) are the same whichever source was used. Debian's packaging rewrote the gzip headers
  (file name dropped, time stamp changed; the compressed data is untouched), so the original header is restored
  from a small table before the check.
* ``build_loaders`` gives the training stage its batches. The batches, augmentation included, are a pure function
  of ``(seed, epoch, rank, world_size)``: a resumed run sees exactly the batches an uninterrupted one would.
  Fashion-MNIST and CIFAR-100 are held in memory as uint8 tensors and augmented per batch with tensor ops; ImageNet
  goes through a torch ``DataLoader`` whose per-sample augmentation seed depends on the sample, not on the worker.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import math
import os
import pickle
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

DATASETS: tuple[str, ...] = ("fashion_mnist", "cifar100", "imagenet")
DATASET_NAMES = {"fashion_mnist": "Fashion-MNIST", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}  # as figures print

# ----------------------------------------------------------------------------------------------------------------
# Fashion-MNIST files, their known MD5s and where they can come from
# ----------------------------------------------------------------------------------------------------------------

FASHION_MNIST_DIRNAME = "fashion-mnist"  # data/raw/fashion-mnist/<the four .gz files>
MIRROR_ENV = "BASISN_DATA_MIRROR"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

# MD5 of the original files, as listed in torchvision.datasets.FashionMNIST.resources (torchvision 0.29.1).
FASHION_MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

# The original gzip headers: FNAME flag, this modification time (found by matching the MD5 above), XFL 0, OS 3
# (Unix), then the file name without ".gz". Debian's package (0.0~git20200523.55506a9-1) ships the same deflate
# data with the name removed and the time set to the package build, hence other MD5s.
UPSTREAM_GZIP_MTIME: dict[str, int] = {
    "train-images-idx3-ubyte.gz": 1504176606,  # 2017-08-31 10:50:06 UTC
    "train-labels-idx1-ubyte.gz": 1504176606,
    "t10k-images-idx3-ubyte.gz": 1504176627,  # 2017-08-31 10:50:27 UTC
    "t10k-labels-idx1-ubyte.gz": 1504176627,
}

FASHION_MNIST_CLASSES: list[str] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

# Per-channel mean/std of the training sets (pixel values in [0, 1]).
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# `--force`: dvc checkout refuses to replace a modified (corrupt) file without it
FIX_HINT = "run `basisn data fetch` (or `dvc checkout --force data.dvc` / `dvc pull data.dvc` where DVC has the files)"


class DataError(RuntimeError):
    """A dataset file is missing, corrupt or cannot be obtained; the message says how to fix it."""


def md5_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_fashion_mnist(root: str | Path, md5s: Mapping[str, str] | None = None) -> Path:
    """Check every Fashion-MNIST file under ``root`` before any work; return the folder holding them."""
    md5s = FASHION_MNIST_MD5 if md5s is None else md5s
    folder = Path(root) / FASHION_MNIST_DIRNAME
    for name, expected in md5s.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: missing; {FIX_HINT}")
        actual = md5_of(path)
        if actual != expected:
            raise DataError(
                f"{path}: MD5 {actual} is not the expected {expected} (corrupt or another file); "
                f"{FIX_HINT}, which replaces it"
            )
    return folder


def _deflate_payload(blob: bytes) -> bytes:
    """The deflate stream and trailer of a single-member gzip file, whatever its header holds (RFC 1952)."""
    if len(blob) < 18 or blob[:3] != b"\x1f\x8b\x08":
        raise ValueError("not a gzip file")
    flags, pos = blob[3], 10
    if flags & 0x04:  # FEXTRA
        (extra_len,) = struct.unpack_from("<H", blob, pos)
        pos += 2 + extra_len
    for flag in (0x08, 0x10):  # FNAME, FCOMMENT: zero-terminated
        if flags & flag:
            pos = blob.index(b"\0", pos) + 1
    if flags & 0x02:  # FHCRC
        pos += 2
    return blob[pos:]


def restore_upstream_gzip(name: str, blob: bytes) -> bytes:
    """Rebuild the original file from a copy whose gzip header was rewritten (e.g. by Debian packaging)."""
    stem = name.removesuffix(".gz").encode()
    header = b"\x1f\x8b\x08\x08" + struct.pack("<I", UPSTREAM_GZIP_MTIME[name]) + b"\x00\x03" + stem + b"\0"
    return header + _deflate_payload(blob)


def _write_atomically(dest: Path, blob: bytes) -> None:
    """Write to a temporary file next to ``dest`` and rename it, so a crash never leaves a half file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; data files are meant to be shared read-only
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _accept(name: str, blob: bytes, expected: str) -> tuple[bytes | None, str]:
    """The original bytes (as is, or with the gzip header restored) if they match ``expected``, and a note."""
    actual = hashlib.md5(blob).hexdigest()
    if actual == expected:
        return blob, ""
    if name in UPSTREAM_GZIP_MTIME:
        try:
            restored = restore_upstream_gzip(name, blob)
        except ValueError:
            restored = b""
        if hashlib.md5(restored).hexdigest() == expected:
            return restored, " (original gzip header restored)"
    return None, f"MD5 {actual}, expected {expected}"


def _mirror_candidates(mirror: Path, name: str) -> list[Path]:
    # A flat folder of the .gz files, a copy of data/raw, or torchvision's FashionMNIST/raw layout.
    return [mirror / name, mirror / FASHION_MNIST_DIRNAME / name, mirror / "FashionMNIST" / "raw" / name]


def _download(name: str, folder: Path, expected: str) -> bytes:
    """Fetch one file with torchvision's downloader (into a temporary folder) and return its bytes."""
    from torchvision.datasets.utils import download_url

    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        download_url(DOWNLOAD_URL + name, tmp, filename=name, md5=expected)
        return (Path(tmp) / name).read_bytes()


def sources_help(root: Path) -> str:
    return (
        "Fashion-MNIST can come from three sources, tried in this order:\n"
        f"  1. a mirror folder: export {MIRROR_ENV}=/path/to/folder holding the four files "
        f"({', '.join(FASHION_MNIST_MD5)})\n"
        f"  2. Debian's package: sudo apt-get install -y {DEBIAN_PACKAGE}   (installs them in {DEBIAN_DIR})\n"
        f"  3. a download from {DOWNLOAD_URL} (needs internet access)\n"
        f"then run `basisn data fetch --root {root}` again."
    )


def fetch_fashion_mnist(
    root: str | Path,
    *,
    mirror: str | Path | None = None,
    debian_dir: str | Path | None = DEBIAN_DIR,
    download: bool = True,
    md5s: Mapping[str, str] | None = None,
    log: Callable[[str], None] = print,
    downloader: Callable[[str, Path, str], bytes] = _download,
) -> dict[str, str]:
    """Make ``root/fashion-mnist`` hold the verified original files; return file -> source used.

    Idempotent: a file that already has the right MD5 is left alone; a wrong one is replaced. ``mirror`` defaults
    to ``$BASISN_DATA_MIRROR``. Raises ``DataError`` listing the sources if some file cannot be obtained.
    """
    md5s = FASHION_MNIST_MD5 if md5s is None else md5s
    root = Path(root)
    folder = root / FASHION_MNIST_DIRNAME
    if mirror is None and os.environ.get(MIRROR_ENV):
        mirror = os.environ[MIRROR_ENV]
    used: dict[str, str] = {}
    failures: list[str] = []
    for name, expected in md5s.items():
        dest = folder / name
        if dest.is_file() and md5_of(dest) == expected:
            used[name] = "already present"
            log(f"fetch: {dest} already present and verified")
            continue
        sources: list[tuple[str, Callable[[], bytes | None]]] = []
        if mirror is not None:
            candidates = _mirror_candidates(Path(mirror), name)
            sources.append((f"mirror {mirror}", lambda c=candidates: _first_existing(c)))
        if debian_dir is not None:
            path = Path(debian_dir) / name
            sources.append((f"Debian package {DEBIAN_PACKAGE} ({debian_dir})", lambda p=path: _read_if_file(p)))
        if download:
            folder.mkdir(parents=True, exist_ok=True)
            sources.append((f"download {DOWNLOAD_URL}", lambda n=name, e=expected: downloader(n, folder, e)))
        notes: list[str] = [] if mirror is not None else [f"mirror: ${MIRROR_ENV} not set"]
        for label, get in sources:
            try:
                blob = get()
            except Exception as exc:  # a failed download must fall through to the summary, not crash
                notes.append(f"{label}: {type(exc).__name__}: {exc}")
                continue
            if blob is None:
                notes.append(f"{label}: not there")
                continue
            good, note = _accept(name, blob, expected)
            if good is None:
                notes.append(f"{label}: {note}")
                continue
            _write_atomically(dest, good)
            used[name] = label
            log(f"fetch: {dest} <- {label}{note}")
            break
        else:
            failures.append(f"{name}: " + ("; ".join(notes) if notes else "no source configured"))
    if failures:
        raise DataError(
            f"could not obtain {len(failures)} Fashion-MNIST file(s) for {folder}:\n  "
            + "\n  ".join(failures)
            + "\n"
            + sources_help(root)
        )
    return used


def _read_if_file(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _first_existing(paths: Sequence[Path]) -> bytes | None:
    for path in paths:
        if path.is_file():
            return path.read_bytes()
    return None


def fetch_main(argv: list[str]) -> int:
    """``basisn data fetch|verify [--root data/raw]``: obtain or check the Fashion-MNIST files."""
    parser = argparse.ArgumentParser(
        prog="basisn data",
        description="Fill data/raw with Fashion-MNIST (mirror, Debian package, download) or verify it.",
    )
    parser.add_argument("action", choices=["fetch", "verify"], help="fetch missing/bad files, or only check")
    parser.add_argument("--root", default="data/raw", help="data folder (default: data/raw)")
    parser.add_argument("--mirror", default=None, help=f"mirror folder (default: ${MIRROR_ENV})")
    parser.add_argument("--no-download", action="store_true", help="never try the internet download")
    args = parser.parse_args(argv)
    try:
        if args.action == "verify":
            folder = verify_fashion_mnist(args.root)
            print(f"verify: {folder}: all {len(FASHION_MNIST_MD5)} files match their MD5")
        else:
            used = fetch_fashion_mnist(args.root, mirror=args.mirror, download=not args.no_download)
            print(f"fetch: done; sources: {', '.join(sorted(set(used.values())))}")
    except DataError as exc:
        print(f"basisn data {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes, the format of the MNIST family."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        blob = f.read()
    if len(blob) < 4 or blob[:2] != b"\0\0" or blob[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file; {FIX_HINT}")
    ndim = blob[3]
    shape = struct.unpack_from(f">{ndim}I", blob, 4)
    offset = 4 + 4 * ndim
    if len(blob) - offset != math.prod(shape):
        raise DataError(f"{path}: IDX header says {shape} but holds {len(blob) - offset} bytes; {FIX_HINT}")
    return np.frombuffer(blob, dtype=np.uint8, offset=offset).reshape(shape)


def load_fashion_mnist(root: str | Path, train: bool, md5s: Mapping[str, str] | None = None) -> tuple[Tensor, Tensor]:
    """Verified Fashion-MNIST split as (uint8 images N x 1 x 28 x 28, int64 labels)."""
    folder = verify_fashion_mnist(root, md5s)
    prefix = "train" if train else "t10k"
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{folder}: {prefix} images {images.shape} and labels {labels.shape} disagree; {FIX_HINT}")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def _unpickle(path: Path) -> dict[str, Any]:
    # The real files were pickled by Python 2: keys load as str with latin1 and as bytes when re-pickled in Python 3.
    with open(path, "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def load_cifar100(root: str | Path, train: bool) -> tuple[Tensor, Tensor, list[str]]:
    """CIFAR-100 from torchvision's on-disk layout ``root/cifar-100-python/{train,test,meta}``."""
    folder = Path(root) / "cifar-100-python"
    split = folder / ("train" if train else "test")
    for path in (split, folder / "meta"):
        if not path.is_file():
            raise DataError(
                f"{path}: missing; extract cifar-100-python.tar.gz "
                f"(https://www.cs.toronto.edu/~kriz/cifar.html) into {Path(root)}"
            )
    entry = _unpickle(split)
    data = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry["fine_labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(f"{split}: data {data.shape} / fine_labels {labels.shape} are not CIFAR-100's layout")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in _unpickle(folder / "meta")["fine_label_names"]]
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= len(names):
        raise DataError(f"{split}: labels outside 0..{len(names) - 1}")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels), names


# ----------------------------------------------------------------------------------------------------------------
# Deterministic sharding and batching
# ----------------------------------------------------------------------------------------------------------------

_PERMUTATION, _AUGMENT, _SUBSET = 0, 1, 2  # stream tags, so the random streams never coincide


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends only on ``parts`` (never on the process, the worker or the global RNG)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def shard_indices(n: int, *, shuffle: bool, seed: int, epoch: int, rank: int, world_size: int, pad: bool) -> np.ndarray:
    """This rank's sample indices for one epoch.

    Every rank draws the same permutation of ``n`` (from ``seed`` and ``epoch``) and takes every
    ``world_size``-th entry starting at ``rank``. With ``pad`` the permutation is first extended by repeating its
    start until it divides evenly, exactly like ``DistributedSampler(drop_last=False)``: all ranks get the same
    count (training needs that for DDP). Without ``pad`` the shards are disjoint and cover the set exactly once
    (evaluation sums correct/total over ranks).
    """
    order = np.arange(n, dtype=np.int64)
    if shuffle:
        order = np.random.default_rng(derive_seed(seed, epoch, _PERMUTATION)).permutation(n)
    if pad and n > 0:
        total = math.ceil(n / world_size) * world_size
        order = np.resize(order, total)  # repeats the start, cyclically
    return order[rank::world_size]


def batch_bounds(num_samples: int, batch_size: int, *, drop_singleton_tail: bool) -> list[tuple[int, int]]:
    """(start, stop) of each batch; a final batch of one sample is dropped in training (BatchNorm needs >= 2)."""
    bounds = [(s, min(s + batch_size, num_samples)) for s in range(0, num_samples, batch_size)]
    if drop_singleton_tail and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds.pop()
    return bounds


def balanced_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A fixed, seeded subset of ``size`` indices, as class-balanced as the class sizes allow (sorted)."""
    n = len(labels)
    if not 0 < size <= n:
        raise ValueError(f"subset size {size} is not in 1..{n} (the split's size)")
    rng = np.random.default_rng(derive_seed(seed, _SUBSET))
    perm = rng.permutation(n)
    shuffled = labels[perm]
    by_class = np.argsort(shuffled, kind="stable")
    starts = np.searchsorted(shuffled[by_class], shuffled[by_class], side="left")
    rank_in_class = np.empty(n, dtype=np.int64)
    rank_in_class[by_class] = np.arange(n) - starts
    classes = np.unique(labels)
    class_order = np.empty(int(classes.max()) + 1, dtype=np.int64)
    class_order[classes] = rng.permutation(len(classes))
    key = rank_in_class * len(classes) + class_order[shuffled]  # round-robin over classes, random class order
    return np.sort(perm[np.argsort(key, kind="stable")[:size]])


class TensorBatchLoader:
    """Batches from uint8 images held in memory; augmentation is done per batch with tensor ops.

    Batch ``b`` of epoch ``e`` depends only on (seed, e, rank, world_size, b): the permutation comes from
    ``shard_indices`` and the crop offsets/flips from a generator seeded with those numbers. Training shards are
    padded like ``DistributedSampler(drop_last=False)``; evaluation shards are disjoint and unpadded.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        crop_padding: int = 0,
        hflip: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 N x C x H x W, got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels.to(torch.int64)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.crop_padding, self.hflip = crop_padding, hflip
        self.rank, self.world_size = rank, world_size
        channels = images.shape[1]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1) * 255.0
        self.scale = 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1) * 255.0)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches ``__iter__`` yields (same meaning as ``DistributedSampler.set_epoch``)."""
        if epoch < 0:
            raise ValueError(f"epoch {epoch} must be >= 0")
        self.epoch = epoch

    def indices(self) -> np.ndarray:
        """The sample indices this rank visits in the current epoch, in order."""
        return shard_indices(
            len(self.labels),
            shuffle=self.train,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
            pad=self.train,
        )

    @property
    def num_samples(self) -> int:
        return len(self.indices())

    def sample_labels(self) -> Tensor:
        """The labels of the samples this rank visits in the current epoch, without touching an image."""
        return self.labels[torch.from_numpy(self.indices())]

    def __len__(self) -> int:
        return len(batch_bounds(self.num_samples, self.batch_size, drop_singleton_tail=self.train))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        indices = torch.from_numpy(self.indices())
        epoch = self.epoch
        for number, (start, stop) in enumerate(
            batch_bounds(len(indices), self.batch_size, drop_singleton_tail=self.train)
        ):
            idx = indices[start:stop]
            images = self.images[idx]
            if self.train and (self.crop_padding or self.hflip):
                generator = torch.Generator().manual_seed(
                    derive_seed(self.seed, epoch, _AUGMENT, self.rank, self.world_size, number)
                )
                images = augment_batch(images, self.crop_padding, self.hflip, generator)
            yield (images.float() - self.mean) * self.scale, self.labels[idx]


def augment_batch(images: Tensor, padding: int, hflip: bool, generator: torch.Generator) -> Tensor:
    """Random crop after zero padding (torchvision ``RandomCrop(size, padding)``) and horizontal flip, per sample.

    Both are one ``gather`` over the flattened padded images (16x faster than 4-D fancy indexing on a CPU).
    """
    n, channels, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4) if padding else images
    rows = torch.arange(height).expand(n, height)
    cols = torch.arange(width).expand(n, width)
    if padding:
        rows = rows + torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
        cols = cols + torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
    if hflip:
        flip = torch.rand(n, 1, generator=generator) < 0.5
        cols = torch.where(flip, cols.flip(1), cols)  # the crop's columns read right to left
    flat_index = (rows[:, :, None] * (width + 2 * padding) + cols[:, None, :]).reshape(n, 1, height * width)
    out = torch.gather(padded.reshape(n, channels, -1), 2, flat_index.expand(n, channels, height * width))
    return out.reshape(n, channels, height, width)


# ----------------------------------------------------------------------------------------------------------------
# ImageNet (folder of JPEGs): torch DataLoader, seeds per sample so workers do not change the batches
# ----------------------------------------------------------------------------------------------------------------


class _ShardBatchSampler:
    """Batches of (index, augmentation seed) pairs; the seed depends on (seed, epoch, index) only."""

    def __init__(self, n: int, batch_size: int, *, train: bool, seed: int, rank: int, world_size: int) -> None:
        self.n, self.batch_size, self.train, self.seed = n, batch_size, train, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0

    def indices(self) -> np.ndarray:
        return shard_indices(
            self.n,
            shuffle=self.train,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
            pad=self.train,
        )

    def __len__(self) -> int:
        return len(batch_bounds(len(self.indices()), self.batch_size, drop_singleton_tail=self.train))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        indices = self.indices()
        for start, stop in batch_bounds(len(indices), self.batch_size, drop_singleton_tail=self.train):
            yield [(int(i), derive_seed(self.seed, self.epoch, _AUGMENT, int(i))) for i in indices[start:stop]]


class _SeededImageFolder(torch.utils.data.Dataset):
    """ImageFolder samples whose random transforms draw from a seed passed with the index."""

    def __init__(self, folder: Any, transform: Callable[[Any], Tensor]) -> None:
        self.folder, self.transform = folder, transform

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:
        index, sample_seed = key
        path, label = self.folder.samples[index]
        image = self.folder.loader(path)
        # torchvision's transforms use the global RNG: fork it so the caller's stream is left untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            return self.transform(image), label


class FolderLoader:
    """A torch DataLoader over an image folder with ``set_epoch`` and worker-independent augmentation."""

    def __init__(self, dataset: _SeededImageFolder, batch_sampler: _ShardBatchSampler, workers: int) -> None:
        self.batch_sampler = batch_sampler
        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
        )

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch {epoch} must be >= 0")
        self.batch_sampler.epoch = epoch

    def indices(self) -> np.ndarray:
        return self.batch_sampler.indices()

    def sample_labels(self) -> Tensor:
        """The labels of the samples this rank visits, from the folder index: no image is opened or decoded
        (the data stage runs on every `dvc repro`; decoding ImageNet each time would take hours)."""
        targets = torch.as_tensor([label for _, label in self.loader.dataset.folder.samples], dtype=torch.int64)
        return targets[torch.from_numpy(self.indices())]

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return iter(self.loader)


def _imagenet_root(root: Path) -> Path:
    for candidate in (root, root / "imagenet"):
        if (candidate / "train").is_dir() and (candidate / "val").is_dir():
            return candidate
    raise DataError(
        f"no ImageNet folder: expected {root}/train and {root}/val (or {root}/imagenet/train and .../val), "
        "each with one sub-folder of images per class"
    )


def check_dataset_files(dataset: str, root: str | Path) -> None:
    """Before any work: the dataset's files are where `root` says (Fashion-MNIST: and match their MD5s).

    Raises DataError with one line naming the file (or folder) and how to obtain it.
    """
    root = Path(root)
    if dataset == "fashion_mnist":
        verify_fashion_mnist(root)
    elif dataset == "cifar100":
        folder = root / "cifar-100-python"
        for path in (folder / "train", folder / "test", folder / "meta"):
            if not path.is_file():
                raise DataError(
                    f"{path}: missing; extract cifar-100-python.tar.gz "
                    f"(https://www.cs.toronto.edu/~kriz/cifar.html) into {root}"
                )
    elif dataset == "imagenet":
        _imagenet_root(root)
    else:
        raise DataError(f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}")


# ----------------------------------------------------------------------------------------------------------------
# The entry point the training stage calls
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Loaders:
    """Train/test batches plus what a model and a report need to know about the dataset."""

    train: TensorBatchLoader | FolderLoader
    test: TensorBatchLoader | FolderLoader
    num_classes: int
    in_channels: int
    input_size: tuple[int, int]
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def build_loaders(
    dataset: str,
    root: str | Path,
    batch_size: int,
    *,
    seed: int,
    workers: int = 0,
    subset: int | None = None,
    test_subset: int | None = None,
    augment: bool = True,
    rank: int = 0,
    world_size: int = 1,
    test_batch_size: int | None = None,
    crop_size: int = 224,
    resize_size: int = 256,
) -> Loaders:
    """Deterministic train/test loaders for ``dataset`` under ``root`` (normally ``data/raw``).

    ``subset``/``test_subset`` keep a fixed class-balanced sample (train: drawn from ``seed``; test: from seed 0,
    so runs with different seeds are scored on the same images). ``workers`` only matters for ImageNet; the
    in-memory datasets build batches in the calling process. ``crop_size``/``resize_size`` are ImageNet's.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}")
    for name, value, low in (("batch_size", batch_size, 1), ("seed", seed, 0), ("workers", workers, 0)):
        if value < low:
            raise ValueError(f"{name} {value} must be >= {low}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} / world_size {world_size}: need world_size >= 1 and 0 <= rank < world_size")
    for name, value in (("subset", subset), ("test_subset", test_subset)):
        if value is not None and value < 1:
            raise ValueError(f"{name} {value} must be >= 1 or None")
    if test_batch_size is not None and test_batch_size < 1:
        raise ValueError(f"test_batch_size {test_batch_size} must be >= 1 or None")
    if crop_size < 1 or resize_size < crop_size:
        raise ValueError(f"crop_size {crop_size} / resize_size {resize_size}: need 1 <= crop_size <= resize_size")
    root = Path(root)
    test_batch_size = test_batch_size or batch_size
    shard = {"seed": seed, "rank": rank, "world_size": world_size}

    if dataset == "imagenet":
        return _imagenet_loaders(
            root, batch_size, test_batch_size, subset, test_subset, augment, workers, crop_size, resize_size, shard
        )

    if dataset == "fashion_mnist":
        train_x, train_y = load_fashion_mnist(root, train=True)
        test_x, test_y = load_fashion_mnist(root, train=False)
        names, mean, std, padding = list(FASHION_MNIST_CLASSES), FASHION_MNIST_MEAN, FASHION_MNIST_STD, 2
    else:
        train_x, train_y, names = load_cifar100(root, train=True)
        test_x, test_y, _ = load_cifar100(root, train=False)
        mean, std, padding = CIFAR100_MEAN, CIFAR100_STD, 4
    if subset is not None:
        keep = torch.from_numpy(balanced_subset(train_y.numpy(), subset, seed))
        train_x, train_y = train_x[keep], train_y[keep]
    if test_subset is not None:
        keep = torch.from_numpy(balanced_subset(test_y.numpy(), test_subset, 0))
        test_x, test_y = test_x[keep], test_y[keep]
    norm = {"mean": mean, "std": std}
    train = TensorBatchLoader(
        train_x, train_y, batch_size, train=True, crop_padding=padding if augment else 0, hflip=augment, **norm, **shard
    )
    test = TensorBatchLoader(test_x, test_y, test_batch_size, train=False, **norm, **shard)
    height, width = train_x.shape[2:]
    return Loaders(train, test, len(names), train_x.shape[1], (height, width), names, mean, std)


def _imagenet_loaders(
    root: Path,
    batch_size: int,
    test_batch_size: int,
    subset: int | None,
    test_subset: int | None,
    augment: bool,
    workers: int,
    crop_size: int,
    resize_size: int,
    shard: dict[str, int],
) -> Loaders:
    from torchvision import datasets, transforms

    folder = _imagenet_root(root)
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    evaluate = transforms.Compose(
        [transforms.Resize(resize_size), transforms.CenterCrop(crop_size), transforms.ToTensor(), normalize]
    )
    if augment:
        train_tf = transforms.Compose(
            [
                transforms.RandomResizedCrop(crop_size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                normalize,
            ]
        )
    else:
        train_tf = evaluate
    train_set = datasets.ImageFolder(folder / "train")
    classes = list(train_set.classes)
    test_set = datasets.ImageFolder(folder / "val", allow_empty=True)
    unknown = sorted(set(test_set.classes) - set(classes))
    if unknown:
        raise DataError(f"{folder / 'val'}: class folders {unknown[:5]} are not in {folder / 'train'}")
    # Label val images by the train folders' indices, so a class missing in val cannot shift the labels.
    test_set.samples = [(path, train_set.class_to_idx[test_set.classes[t]]) for path, t in test_set.samples]
    test_set.targets = [t for _, t in test_set.samples]
    test_set.imgs, test_set.classes, test_set.class_to_idx = test_set.samples, classes, train_set.class_to_idx
    if not test_set.samples:
        raise DataError(f"{folder / 'val'}: no images in any class folder named like those in train/")
    for split, value, base_seed in ((train_set, subset, shard["seed"]), (test_set, test_subset, 0)):
        if value is not None:
            keep = balanced_subset(np.asarray(split.targets), value, base_seed)
            split.samples = [split.samples[i] for i in keep]
            split.targets = [split.targets[i] for i in keep]
            split.imgs = split.samples

    def make(split: Any, transform: Any, size: int, train: bool) -> FolderLoader:
        sampler = _ShardBatchSampler(len(split.samples), size, train=train, **shard)
        return FolderLoader(_SeededImageFolder(split, transform), sampler, workers)

    return Loaders(
        make(train_set, train_tf, batch_size, True),
        make(test_set, evaluate, test_batch_size, False),
        len(classes),
        3,
        (crop_size, crop_size),
        list(classes),
        IMAGENET_MEAN,
        IMAGENET_STD,
    )
