"""Shared fixtures: MNIST (real when $MNIST_EDGE_DATA points at it, else synthetic), a small
trained checkpoint, an isolated working directory for every test, and the rules tests judge by
(answers compared where the reference is decisive, binomial floors for label rates).

Synthetic MNIST: digits drawn with Pillow's font at random sizes, offsets and rotations, written
as gzipped IDX files in torchvision's layout. A CNN learns them, so accuracy tests mean something
on either kind of data.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest

REAL = os.environ.get("MNIST_EDGE_DATA")
TRAIN_N, TEST_N = 2500, 1000  # synthetic sizes
REPO = Path(__file__).resolve().parents[1]
# An absolute path on a POSIX or Windows machine, as stack traces and temp files spell them:
# what no artifact may contain (it would name the build machine and change with the checkout).
# A Windows path must name a folder (C:\Users\): a drive letter alone turns up in the bytes of
# weights (about one file in ten of 2.8 MB of trained floats holds "X:\" after a comma or space).
ABSOLUTE_PATH = re.compile(
    rb'(?:^|["\s(=:,\[])(?:/(?:home|root|tmp|work|usr|opt|Users|var|private)/'
    rb"|[A-Z]:\\[\w .-]{2,}\\)"
)

# onnxruntime-web as `make web-deps` installs it, found from here rather than from the working
# directory (every test runs in a folder of its own).
_ORT_WEB = REPO / ".web" / "node_modules" / "onnxruntime-web"
if "MNIST_EDGE_ORT_WEB" not in os.environ and _ORT_WEB.is_dir():
    os.environ["MNIST_EDGE_ORT_WEB"] = str(_ORT_WEB)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (magic 2049 labels / 2051 images)."""
    magic = 2051 if array.ndim == 3 else 2049
    header = struct.pack(">II", magic, array.shape[0]) + b"".join(
        struct.pack(">I", d) for d in array.shape[1:]
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def draw_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 28, 28) uint8 white-on-black digits and their labels, made the way MNIST was made:
    a digit drawn large (a font at random sizes, strokes, slants and rotations), its ink scaled
    to fit a 20x20 box with anti-aliasing, and centred by its centre of mass in 28x28 on a black
    background. Stroke widths come out like MNIST's (median ~2 px), so the image pipeline's
    tests mean the same on them."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    fonts = [ImageFont.load_default(size=s) for s in range(60, 81, 4)]
    images = np.zeros((n, 28, 28), np.uint8)
    for i, label in enumerate(labels):
        big = Image.new("L", (128, 128))
        ImageDraw.Draw(big).text((64, 64), str(label), fill=255, anchor="mm",
                                 font=fonts[int(rng.integers(len(fonts)))],
                                 stroke_width=int(rng.integers(0, 2)), stroke_fill=255)  # fmt: skip
        slant = float(rng.uniform(-0.25, 0.25))
        big = big.transform(big.size, Image.AFFINE, (1, slant, -slant * 64, 0, 1, 0),
                            resample=Image.BILINEAR)  # fmt: skip
        big = big.rotate(float(rng.uniform(-10, 10)), resample=Image.BILINEAR)
        crop = big.crop(big.getbbox())
        w, h = crop.size
        small = np.asarray(
            crop.resize((max(1, round(w * 20 / max(w, h))), max(1, round(h * 20 / max(w, h)))),
                        Image.LANCZOS), np.float32)  # fmt: skip
        mass = small.sum()
        cy = (small.sum(1) * np.arange(small.shape[0])).sum() / mass
        cx = (small.sum(0) * np.arange(small.shape[1])).sum() / mass
        top = min(max(round(13.5 - cy), 0), 28 - small.shape[0])
        left = min(max(round(13.5 - cx), 0), 28 - small.shape[1])
        images[i, top : top + small.shape[0], left : left + small.shape[1]] = np.clip(small, 0, 255)
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


@pytest.fixture(scope="session", autouse=True)
def _session_cwd(tmp_path_factory: pytest.TempPathFactory):
    """Session fixtures (the trained model, its exports) run outside the checkout too."""
    before = Path.cwd()
    os.chdir(tmp_path_factory.mktemp("session-cwd"))
    yield
    os.chdir(before)


@pytest.fixture(autouse=True)
def _own_cwd(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs in an empty folder of its own: nothing it or a command writes by default
    (exports/, benchmarks/results/) lands in the checkout, and nothing found there (what `make
    demo` left in exports/) is picked up."""
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)
    return cwd


def pytest_terminal_summary(terminalreporter, config) -> None:
    """Name the random order's seed at the end, where -q keeps it visible."""
    seed = getattr(config.option, "randomly_seed", None)
    if config.pluginmanager.has_plugin("randomly") and isinstance(seed, int):
        terminalreporter.write_line(
            f"tests ran in random order, seed {seed}: rerun it with -p randomly "
            f"-p no:cacheprovider --randomly-seed={seed}"
        )


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
    shifts pay off over full runs; docs/explanation/measurements.md)."""
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


# --- the rules tests judge by -------------------------------------------------------------------
def decisive(reference, atol: float | None = None, rtol: float | None = None):
    """Rows whose top class the parity rule protects (mnist_edge.edge.parity.decisive_rows)."""
    from mnist_edge.edge import parity

    return parity.decisive_rows(
        reference, parity.ATOL if atol is None else atol, parity.RTOL if rtol is None else rtol
    )


def assert_same_answers(reference, candidate, atol: float | None = None, rtol: float | None = None):
    """Same argmax wherever the reference's margin exceeds what the tolerance lets both values
    move; near-ties may go either way on another CPU or runtime. Returns the decisive count."""
    import numpy as np

    keep = decisive(reference, atol, rtol)
    ref, cand = np.asarray(reference)[keep].argmax(1), np.asarray(candidate)[keep].argmax(1)
    differ = np.nonzero(ref != cand)[0]
    assert differ.size == 0, f"{differ.size} decisive rows answer differently: {differ[:10]}"
    return int(keep.sum())


# How often two readings of one digit by the packaged model agree, at least, when the image
# pipeline works: the robustness benchmark's worst group (fonts,
# docs/explanation/measurements.md) reads 98.6% of its images right, so two versions of a
# digit (clean and degraded) both read right, and so agree, at a rate of at least 1 - 2 x 1.4%.
# Tests hold label counts to binomial_floor(n, this).
P_AGREE = 1 - 2 * (1 - 0.986)


def binomial_floor(n: int, p: float, alpha: float = 1e-6) -> int:
    """The largest k with P(Binomial(n, p) < k) <= alpha: a count of successes that a process
    succeeding with probability p falls below only once in 1/alpha runs."""
    if p >= 1:
        return n
    below = 0.0
    for k in range(n + 1):
        log_pmf = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                   + k * math.log(p) + (n - k) * math.log1p(-p))  # fmt: skip
        below += math.exp(log_pmf)
        if below > alpha:  # P(X <= k) is past alpha: k successes is the floor
            return k
    return n


def output_step(model) -> float:
    """The quantization step of an INT8 model's logits (the scale of the DequantizeLinear that
    feeds LogSoftmax)."""
    from onnx import numpy_helper

    producer = {o: n for n in model.graph.node for o in n.output}
    dq = producer[next(n for n in model.graph.node if n.op_type == "LogSoftmax").input[0]]
    assert dq.op_type == "DequantizeLinear"
    init = {i.name: i for i in model.graph.initializer}
    return float(numpy_helper.to_array(init[dq.input[1]]))


def shrunk_ink(d: np.ndarray, tall: int):
    """A 28x28 MNIST digit's ink box, dark on white, shrunk by area averaging to `tall` pixels
    high (keeping the aspect): the digit as a low-resolution scan holds it, before paper."""
    from PIL import Image

    ys, xs = np.nonzero(d)
    ink = Image.fromarray(255 - d[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    return ink.resize((max(1, round(ink.width * tall / ink.height)), tall), Image.BOX)
