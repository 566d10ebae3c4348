"""Shared fixtures: MNIST (real when $MNIST_EDGE_DATA points at it, else synthetic) and a
small trained checkpoint.

Synthetic MNIST: digits drawn with Pillow's font at random sizes, offsets and rotations, written
as gzipped IDX files in torchvision's layout. A CNN learns them, so accuracy tests mean something
on either kind of data.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

REAL = os.environ.get("MNIST_EDGE_DATA")
TRAIN_N, TEST_N = 2500, 1000  # synthetic sizes


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (magic 2049 labels / 2051 images)."""
    magic = 2051 if array.ndim == 3 else 2049
    header = struct.pack(">II", magic, array.shape[0]) + b"".join(
        struct.pack(">I", d) for d in array.shape[1:]
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def draw_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 28, 28) uint8 white-on-black digits and their labels."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    fonts = {s: ImageFont.load_default(size=s) for s in range(18, 25)}
    images = np.zeros((n, 28, 28), np.uint8)
    for i, label in enumerate(labels):
        im = Image.new("L", (28, 28))
        pos = (14 + int(rng.integers(-2, 3)), 14 + int(rng.integers(-2, 3)))
        ImageDraw.Draw(im).text(
            pos,
            str(label),
            fill=255,
            font=fonts[int(rng.integers(18, 25))],
            anchor="mm",
            stroke_width=1,
            stroke_fill=255,
        )
        im = im.rotate(float(rng.uniform(-8, 8)), resample=Image.BILINEAR)
        noisy = np.asarray(im, np.float32) + rng.normal(0, 5, (28, 28))
        images[i] = np.clip(noisy, 0, 255)
    return images, labels


def make_synthetic_mnist(root: Path, train_n: int = TRAIN_N, test_n: int = TEST_N) -> Path:
    """Write ROOT/MNIST/raw/*.gz with synthetic digits; returns ROOT."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", train_n, 0), ("t10k", test_n, 1)):
        images, labels = draw_digits(n, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the user's ~/.cache out of the tests."""
    os.environ["MNIST_EDGE_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with MNIST/raw/*.gz: the real set when $MNIST_EDGE_DATA is set."""
    if REAL:
        return Path(REAL)
    return make_synthetic_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def trained(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint trained for 1 epoch on 2,000 images (tested on 1,000), with the original
    recipe: without augmentation it learns fastest in one short epoch (the default recipe's
    shifts pay off over full runs; benchmarks/README.md)."""
    from mnist_edge.train import TrainConfig, train

    out = tmp_path_factory.mktemp("trained")
    cfg = TrainConfig.from_recipe(
        "original", epochs=1, limit=2000, test_limit=1000, data_dir=str(mnist_dir),
        output_dir=str(out),
    )  # fmt: skip
    return train(cfg).checkpoint


@pytest.fixture(scope="session")
def exported(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained checkpoint exported in every format (no parity run), in its own folder."""
    from mnist_edge.export import FORMATS, ExportConfig, export

    out = tmp_path_factory.mktemp("exported")
    export(ExportConfig(checkpoint=str(trained), output_dir=str(out), formats=FORMATS))
    return out


def cli(*args: object, input: str | None = None):
    """Run `mnist-edge ARGS` in-process (typer's CliRunner); stdout and stderr kept apart."""
    from typer.testing import CliRunner

    from mnist_edge.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def assert_clean_error(result, fragment: str, code: int = 2) -> None:
    """Exactly one red `error:` line on stderr naming `fragment`, the exit code, no traceback."""
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
