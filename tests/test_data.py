import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REAL, TEST_N, TRAIN_N, make_synthetic_mnist

from mnist_edge.edge import data
from mnist_edge.edge.errors import DataError


@pytest.fixture
def two_dirs(tmp_path, monkeypatch):
    """Two small, different MNIST folders, and a clean environment."""
    monkeypatch.delenv(data.ENV_DATA, raising=False)
    monkeypatch.setenv(data.ENV_CACHE, str(tmp_path / "cache"))
    a = make_synthetic_mnist(tmp_path / "a", train_n=30, test_n=10)
    b = make_synthetic_mnist(tmp_path / "b", train_n=40, test_n=20)
    return a, b


def listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_data_dir_beats_environment(two_dirs, monkeypatch):
    a, b = two_dirs
    monkeypatch.setenv(data.ENV_DATA, str(b))
    assert len(data.load_split("train", a)) == 30
    assert len(data.load_split("train")) == 40


def test_environment_beats_cache(two_dirs, monkeypatch, tmp_path):
    a, b = two_dirs
    cached = make_synthetic_mnist(tmp_path / "cache" / "download", train_n=50, test_n=5)
    assert len(data.load_split("test")) == 5  # nothing else given: the cache
    monkeypatch.setenv(data.ENV_DATA, str(a))
    assert len(data.load_split("test")) == 10
    assert cached.exists()


def test_cache_with_extracted_files_is_used_without_download(two_dirs, tmp_path, monkeypatch):
    make_synthetic_mnist(tmp_path / "cache" / "download", train_n=12, test_n=4)
    raw = tmp_path / "cache" / "download" / "MNIST" / "raw"
    import gzip

    for gz in raw.glob("*.gz"):  # the layout torchvision leaves after a download
        (raw / gz.name[:-3]).write_bytes(gzip.open(gz).read())
        gz.unlink()
    monkeypatch.setattr(data, "_download", lambda root: pytest.fail("should not download"))
    assert data.resolve_root() == raw
    assert len(data.load_split("test")) == 4


def test_read_only_dir_is_never_written(two_dirs, tmp_path):
    a, _ = two_dirs
    before = listing(a)
    os.chmod(a / "MNIST" / "raw", 0o555)
    try:
        split = data.load_split("train", a)
    finally:
        os.chmod(a / "MNIST" / "raw", 0o755)
    assert listing(a) == before  # read in place, nothing written beside the files
    assert not (tmp_path / "cache").exists()  # nor extracted anywhere else
    assert split.images.shape == (30, 28, 28) and split.images.dtype == np.uint8


def test_flat_folder_of_gz_files_is_accepted(two_dirs):
    a, _ = two_dirs
    assert len(data.load_split("test", a / "MNIST" / "raw")) == 10


def test_dir_without_mnist_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no MNIST in .*expected MNIST/raw/"):
        data.load_split("train", tmp_path)


def test_env_without_mnist_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_DATA, str(tmp_path))
    with pytest.raises(DataError, match=r"\$MNIST_EDGE_DATA"):
        data.load_split("train")


def test_offline_error_names_every_place(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.delenv(data.ENV_DATA, raising=False)
    monkeypatch.setenv(data.ENV_CACHE, str(tmp_path / "cache"))
    # Nothing listens on port 9 of the loopback: the download fails at once, as offline.
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(DataError) as info:
        data.load_split("test")
    msg = str(info.value)
    assert "download failed" in msg
    for place in ("--data-dir", "$MNIST_EDGE_DATA", str(tmp_path / "cache")):
        assert place in msg
    assert "\n" not in msg


def test_limit_larger_than_data_is_an_error(two_dirs):
    a, _ = two_dirs
    with pytest.raises(DataError, match="larger than the 10 images"):
        data.load_split("test", a, limit=11)
    assert len(data.load_split("test", a, limit=3)) == 3


def test_corrupt_file_is_a_data_error(two_dirs, tmp_path):
    a, _ = two_dirs
    (a / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError):
        data.load_split("test", a)


def test_batches_feed_normalised_nchw(two_dirs):
    a, _ = two_dirs
    split = data.load_split("train", a)
    chunks = list(data.batches(split.images, 8))
    assert [c.shape for c in chunks] == [(8, 1, 28, 28)] * 3 + [(6, 1, 28, 28)]
    assert all(c.dtype == np.float32 for c in chunks)
    np.testing.assert_allclose(
        chunks[0][0, 0], (split.images[0] / 255 - 0.1307) / 0.3081, atol=1e-5
    )


def test_sizes_and_labels_match_the_source(mnist_dir):
    train, test = data.load_split("train", mnist_dir), data.load_split("test", mnist_dir)
    if REAL:  # the official files
        assert (len(train), len(test)) == (60_000, 10_000)
        assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
        assert np.bincount(train.labels).tolist()[:3] == [5923, 6742, 5958]
    else:
        assert (len(train), len(test)) == (TRAIN_N, TEST_N)
    assert train.sha256 != test.sha256


def test_reading_needs_neither_torch_nor_torchvision(two_dirs):
    a, _ = two_dirs
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
        "from mnist_edge.edge import data\n"
        f"s = data.load_split('test', {str(a)!r}); print(len(s), s.images.dtype)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["10", "uint8"]


def _rewrite(path: Path, edit) -> None:
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(edit(raw)))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda raw: b"\x00\x00\x08\x01" + raw[4:], "magic number 2049"),  # labels' magic
        (lambda raw: raw[:-100], "truncated"),
        (lambda raw: raw + b"\x00" * 28, "header"),
        (lambda raw: b"", "magic number None"),
    ],
)
def test_damaged_idx_files_are_data_errors(two_dirs, edit, message):
    a, _ = two_dirs
    _rewrite(a / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz", edit)
    with pytest.raises(DataError, match=message):
        data.load_split("test", a)


def test_a_damaged_copy_of_an_official_file_is_caught(tmp_path):
    """A file of the official size whose md5 differs (one pixel flipped) is refused."""
    raw = tmp_path / "raw"
    raw.mkdir()
    size, _ = data.OFFICIAL["t10k-labels-idx1-ubyte"]
    labels = np.zeros(size - 8, np.uint8)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 2049, size - 8) + labels.tobytes()
    )
    with pytest.raises(DataError, match="official file's size but not its md5"):
        data.read_idx(raw, "t10k-labels-idx1-ubyte")


def test_uncompressed_files_are_read_too(two_dirs, tmp_path):
    a, _ = two_dirs
    flat = tmp_path / "flat"
    flat.mkdir()
    for gz in (a / "MNIST" / "raw").glob("*.gz"):
        (flat / gz.name[:-3]).write_bytes(gzip.decompress(gz.read_bytes()))
    np.testing.assert_array_equal(
        data.load_split("test", flat).images, data.load_split("test", a).images
    )
