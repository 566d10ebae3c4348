"""MNIST on disk: where the files come from, reading them with numpy, and the one batch feed.

Where the files come from, first match wins:
  1. `--data-dir DIR` (strict: a DIR without MNIST is an error, never a silent download);
  2. the environment variable `MNIST_EDGE_DATA` (strict likewise);
  3. the per-user cache (`$MNIST_EDGE_CACHE`, else `$XDG_CACHE_HOME/mnist-edge`, else
     `~/.cache/mnist-edge`), downloading into it through torchvision when it is empty.
The IDX files (gzipped or not) are read with numpy alone, straight from where they lie: a DIR may
be read-only and is never written. torchvision (the `train` extra) is only the downloader.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import spec
from .errors import DataError, MissingDependency, missing_dependency, reading, reason

ENV_DATA = "MNIST_EDGE_DATA"
ENV_CACHE = "MNIST_EDGE_CACHE"
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_FILES = tuple(name for pair in SPLIT_FILES.values() for name in pair)
# The official files, decompressed: size and md5. A file of the official size with another md5 is
# a damaged copy of the official one (a set of other size, e.g. a test's, is taken as it is).
OFFICIAL = {
    "train-images-idx3-ubyte": (47_040_016, "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (60_008, "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (7_840_016, "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (10_008, "27ae3e4e09519cfbb04c329615203637"),
}
IDX_MAGIC = {3: 2051, 1: 2049}  # ndim -> magic number (unsigned bytes, big-endian dims)
POINT_HINT = f"point --data-dir or ${ENV_DATA} at a folder holding MNIST/raw/*.gz"


@dataclass(frozen=True)
class Split:
    """One MNIST split in memory."""

    images: np.ndarray  # uint8 (N, 28, 28), ink high, as in the files
    labels: np.ndarray  # int64 (N,)
    name: str  # "train" or "test"
    sha256: str  # hash of the two IDX files read (decompressed)

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, limit: int | None) -> Split:
        """The first `limit` images (all when None or more than there are): a view, no copy.
        A command loads a split once and gives each check the part it judges on."""
        if limit is None or limit >= len(self):
            return self
        if limit < 1:
            raise DataError(f"the {self.name} limit must be at least 1, got {limit}")
        return Split(self.images[:limit], self.labels[:limit], self.name, self.sha256)


def cache_dir() -> Path:
    """The per-user cache folder (not created here)."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mnist-edge"


def _raw_folder(root: Path) -> Path | None:
    """The folder inside `root` that holds the IDX files (plain or .gz), or None."""
    for cand in (root / "MNIST" / "raw", root / "raw", root):
        if all((cand / n).is_file() or (cand / f"{n}.gz").is_file() for n in ALL_FILES):
            return cand
    return None


def _download(root: Path) -> None:
    try:
        import torchvision  # only the downloader, from the train extra
    except ImportError:
        raise missing_dependency("torchvision", "downloading MNIST") from None
    root.mkdir(parents=True, exist_ok=True)
    for train in (True, False):
        torchvision.datasets.MNIST(root=str(root), train=train, download=True)


def resolve_root(data_dir: Path | str | None = None, *, download: bool = True) -> Path:
    """The folder that holds the four IDX files (plain or .gz)."""
    for label, value in (("--data-dir", data_dir), (f"${ENV_DATA}", os.environ.get(ENV_DATA))):
        if not value:
            continue
        path = Path(value).expanduser()
        raw = _raw_folder(path)
        if raw is None:
            raise DataError(
                f"no MNIST in {path} (from {label}): expected MNIST/raw/ with "
                f"{ALL_FILES[0]}.gz and its three siblings; {POINT_HINT}"
            )
        return raw
    cache = cache_dir() / "download"
    if (raw := _raw_folder(cache)) is not None:
        return raw
    looked = f"--data-dir (not given), ${ENV_DATA} (not set), the cache {cache} (empty)"
    if not download:
        raise DataError(f"MNIST not found; looked at {looked}; {POINT_HINT}")
    try:
        _download(cache)
    except MissingDependency as exc:
        raise DataError(f"MNIST not found; looked at {looked}; {POINT_HINT}, or {exc}") from exc
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError when offline
        raise DataError(
            f"MNIST not found and the download failed ({reason(exc)[:160]}); looked at {looked}; "
            f"{POINT_HINT}"
        ) from exc
    return _raw_folder(cache) or cache


def read_idx(folder: Path, name: str) -> tuple[np.ndarray, str]:
    """One IDX file (NAME or NAME.gz in `folder`) as a uint8 array, and its sha256."""
    path = folder / name if (folder / name).is_file() else folder / f"{name}.gz"
    with reading(path, "a readable MNIST file", DataError):
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    ndim = 3 if "images" in name else 1
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic != IDX_MAGIC[ndim] or len(raw) < 4 + 4 * ndim:
        raise DataError(
            f"{path} is not an MNIST IDX file (magic number {magic}, expected {IDX_MAGIC[ndim]})"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)):
        raise DataError(
            f"{path} holds {len(body)} bytes of data where its header {dims} says "
            f"{int(np.prod(dims))} (truncated?)"
        )
    size, md5 = OFFICIAL[name]
    if len(raw) == size and hashlib.md5(raw).hexdigest() != md5:
        raise DataError(f"{path} has the official file's size but not its md5: a damaged copy")
    return np.frombuffer(body, np.uint8).reshape(dims), hashlib.sha256(raw).hexdigest()


def load_split(split: str, data_dir: Path | str | None = None, limit: int | None = None) -> Split:
    """Load `split` ("train" or "test"), keeping the first `limit` images when given."""
    if split not in SPLIT_FILES:
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    if limit is not None and limit < 1:
        raise DataError(f"the {split} limit must be at least 1, got {limit}")
    root = resolve_root(data_dir)
    image_file, label_file = SPLIT_FILES[split]
    images, image_hash = read_idx(root, image_file)
    labels, label_hash = read_idx(root, label_file)
    side = spec.IMAGE_SIZE
    if images.shape[1:] != (side, side) or len(images) != len(labels):
        raise DataError(
            f"MNIST {split} files under {root} hold images {images.shape} and labels "
            f"{labels.shape}; expected (N, {side}, {side}) and (N,)"
        )
    if labels.size and labels.max() >= spec.NUM_CLASSES:
        raise DataError(f"MNIST {split} labels under {root} hold {labels.max()}; expected 0..9")
    if limit is not None:
        if limit > len(labels):
            raise DataError(
                f"the {split} limit {limit} is larger than the {len(labels)} images available"
            )
        images, labels = images[:limit], labels[:limit]
    return Split(
        images=images,
        labels=labels.astype(np.int64),
        name=split,
        sha256=f"{image_hash[:16]}+{label_hash[:16]}",
    )


def batches(images: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """The one feed for parity, bench, evaluation and calibration: normalised float32
    (B, 1, 28, 28) batches, made one at a time so memory stays bounded."""
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        yield spec.normalize(chunk)[:, None, :, :]  # (B, 1, 28, 28)
