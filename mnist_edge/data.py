"""MNIST on disk: where the files come from, loading them, and the one batch feed.

Where the files come from, first match wins:
  1. `--data-dir DIR` (strict: a DIR without MNIST is an error, never a silent download);
  2. the environment variable `MNIST_EDGE_DATA` (strict likewise);
  3. the per-user cache (`$MNIST_EDGE_CACHE`, else `$XDG_CACHE_HOME/mnist-edge`, else
     `~/.cache/mnist-edge`), downloading into it through torchvision when it is empty.
A DIR may be read-only: its `.gz` files are extracted into the cache, never next to themselves.
torchvision reads the extracted IDX files (it only needs a folder that already holds them).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import spec
from .errors import DataError
from .files import sha256

ENV_DATA = "MNIST_EDGE_DATA"
ENV_CACHE = "MNIST_EDGE_CACHE"
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_FILES = tuple(name for pair in SPLIT_FILES.values() for name in pair)
POINT_HINT = f"point --data-dir or ${ENV_DATA} at a folder holding MNIST/raw/*.gz"


@dataclass(frozen=True)
class Split:
    """One MNIST split in memory."""

    images: np.ndarray  # uint8 (N, 28, 28), ink high, as in the files
    labels: np.ndarray  # int64 (N,)
    name: str  # "train" or "test"
    sha256: str  # hash of the two IDX files read

    def __len__(self) -> int:
        return len(self.labels)


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


def _has_extracted(root: Path) -> bool:
    return all((root / "MNIST" / "raw" / n).is_file() for n in ALL_FILES)


def _extract_into_cache(raw: Path) -> Path:
    """Copy/extract the IDX files of `raw` into a cache root keyed by their size and mtime."""
    key = hashlib.sha256()
    for name in ALL_FILES:
        src = raw / name if (raw / name).is_file() else raw / f"{name}.gz"
        st = src.stat()
        key.update(f"{src.resolve()}:{st.st_size}:{st.st_mtime_ns};".encode())
    root = cache_dir() / "local" / key.hexdigest()[:16]
    if _has_extracted(root):
        return root
    dest = root / "MNIST" / "raw"
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for name in ALL_FILES:
            tmp = dest / f".{name}.tmp{os.getpid()}"
            if (raw / name).is_file():
                shutil.copyfile(raw / name, tmp)
            else:
                with gzip.open(raw / f"{name}.gz", "rb") as fin, open(tmp, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
            os.replace(tmp, dest / name)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot extract MNIST from {raw} into the cache {dest}: {exc}") from exc
    return root


def _download(root: Path) -> None:
    import torchvision  # heavy, and only needed on this path

    root.mkdir(parents=True, exist_ok=True)
    for train in (True, False):
        torchvision.datasets.MNIST(root=str(root), train=train, download=True)


def resolve_root(data_dir: Path | str | None = None, *, download: bool = True) -> Path:
    """A folder holding extracted MNIST in torchvision's layout (ROOT/MNIST/raw/*-ubyte)."""
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
        return path if _has_extracted(path) else _extract_into_cache(raw)
    cache = cache_dir() / "download"
    if _has_extracted(cache):
        return cache
    if _raw_folder(cache) is not None:  # .gz files only, e.g. copied in by hand
        return _extract_into_cache(_raw_folder(cache))  # type: ignore[arg-type]
    looked = f"--data-dir (not given), ${ENV_DATA} (not set), the cache {cache} (empty)"
    if not download:
        raise DataError(f"MNIST not found; looked at {looked}; {POINT_HINT}")
    try:
        _download(cache)
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError when offline
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"MNIST not found and the download failed ({reason[:160]}); looked at {looked}; "
            f"{POINT_HINT}"
        ) from exc
    return cache


def load_split(split: str, data_dir: Path | str | None = None, limit: int | None = None) -> Split:
    """Load `split` ("train" or "test"), keeping the first `limit` images when given."""
    if split not in SPLIT_FILES:
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    root = resolve_root(data_dir)
    import torchvision

    try:
        ds = torchvision.datasets.MNIST(root=str(root), train=split == "train", download=False)
    except Exception as exc:  # corrupt IDX files surface as assorted errors inside torchvision
        raise DataError(f"cannot read MNIST {split} files under {root}: {exc}") from exc
    images = ds.data.numpy()
    labels = ds.targets.numpy().astype(np.int64)
    if images.ndim != 3 or images.shape[1:] != (spec.IMAGE_SIZE, spec.IMAGE_SIZE):
        raise DataError(f"MNIST {split} images under {root} have shape {images.shape}")
    if limit is not None:
        if limit < 1:
            raise DataError(f"the {split} limit must be at least 1, got {limit}")
        if limit > len(labels):
            raise DataError(
                f"the {split} limit {limit} is larger than the {len(labels)} images available"
            )
        images, labels = images[:limit], labels[:limit]
    digest = "+".join(sha256(root / "MNIST" / "raw" / n)[:16] for n in SPLIT_FILES[split])
    return Split(images=images, labels=labels, name=split, sha256=digest)


def batches(images: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """The one feed for parity, bench and calibration: normalised float32 (B, 1, 28, 28)."""
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        yield spec.normalize(chunk)[:, None, :, :]  # (B, 1, 28, 28)
