"""The image pipeline on pictures whose answer is known: degraded real digits, blank, tiny and
huge images, unusual modes and decompression bombs."""

import struct
import warnings
import zlib

import numpy as np
import pytest
from conftest import P_AGREE, binomial_floor, shrunk_ink
from PIL import Image, ImageFilter

from mnist_edge.edge import images, threads
from mnist_edge.edge.data import load_split
from mnist_edge.edge.errors import InputError
from mnist_edge.edge.runtime import Predictor


@pytest.fixture(scope="module")
def digits(mnist_dir):
    return load_split("test", mnist_dir, 100)


@pytest.fixture(scope="module")
def predictor():
    """Labels are judged with the packaged model: a one-epoch model flips on small changes."""
    return Predictor.pretrained()


def on_paper(d: np.ndarray, scale: int = 6) -> np.ndarray:
    """Dark ink on white paper, upscaled: a scan of the digit (float 0..255)."""
    return np.asarray(Image.fromarray(255 - d).resize((28 * scale,) * 2, Image.BICUBIC), np.float32)


def lit_unevenly(d):
    a = on_paper(d) / 255
    light = np.linspace(0.35, 1.0, a.shape[1])[None, :]  # dark on the left, bright on the right
    return Image.fromarray((255 * light * (0.15 + 0.85 * a)).astype(np.uint8))


def noisy(d):
    rng = np.random.default_rng(int(d.sum()))
    speckled = on_paper(d, 4) + rng.normal(0, 30, (112, 112))
    return Image.fromarray(np.clip(speckled, 0, 255).astype(np.uint8))


def sixteen_bit(d):
    return Image.fromarray((on_paper(d, 2) * 257).astype(np.uint16))  # mode I;16


def small_on_big_canvas(d):
    canvas = Image.new("L", (900, 700), 235)
    canvas.paste(
        Image.fromarray(on_paper(d, 3).astype(np.uint8)).point(lambda v: v * 0.92), (640, 90)
    )
    return canvas


@pytest.mark.parametrize("make", [lit_unevenly, noisy, sixteen_bit, small_on_big_canvas])
def test_degraded_digits_get_the_answer_of_the_clean_digit(predictor, digits, make):
    """The same digits scanned cleanly and degraded get the same answers, at the rate the
    robustness benchmark measured (a binomial floor for 100 digits); a pipeline that failed a
    degradation agrees on ~10-50%."""
    scans = [Image.fromarray(on_paper(d).astype(np.uint8)) for d in digits.images]
    clean = predictor.predict_images(scans).labels
    got = predictor.predict_images([make(d) for d in digits.images]).labels
    assert (got == clean).sum() >= binomial_floor(len(clean), P_AGREE), make.__name__


def test_gradient_lighting_is_flattened(digits):
    """After background removal an unevenly lit scan looks like the evenly lit one."""
    even = images.prepare_image(Image.fromarray(on_paper(digits.images[0]).astype(np.uint8)))
    uneven = images.prepare_image(lit_unevenly(digits.images[0]))
    assert np.abs(even.astype(int) - uneven.astype(int)).mean() < 12
    assert uneven[:, :3].max() < 40 and uneven[:, -3:].max() < 40  # no lit paper left as ink


def test_output_is_mnist_shaped(digits):
    x = images.prepare_image(lit_unevenly(digits.images[3]))
    assert x.shape == (28, 28) and x.dtype == np.uint8 and x.max() == 255
    ys, xs = np.nonzero(x > 0)
    assert max(np.ptp(ys), np.ptp(xs)) == 19  # the longer side fills the 20-pixel box
    com = [(x.sum(1) * np.arange(28)).sum() / x.sum(), (x.sum(0) * np.arange(28)).sum() / x.sum()]
    assert np.abs(np.array(com) - 13.5).max() <= 1.0
    with pytest.raises(InputError, match="box"):
        images.prepare_image(lit_unevenly(digits.images[3]), box=40)


@pytest.mark.parametrize(
    "picture",
    [
        Image.new("L", (64, 64), 255),  # white paper
        Image.new("L", (64, 64), 0),  # black
        Image.new("RGB", (64, 64), (200, 180, 40)),  # coloured paper
        Image.new("RGBA", (64, 64), (0, 0, 0, 0)),  # fully transparent
        Image.fromarray(np.random.default_rng(0).normal(200, 3, (80, 80)).astype(np.uint8)),
        Image.new("L", (1, 1), 0),  # one pixel
    ],
)
def test_blank_pictures_are_refused(picture):
    with pytest.raises(InputError, match="blank"):
        images.prepare_image(picture)


def test_tiny_pictures_give_an_answer_not_a_crash():
    dot = np.zeros((3, 3), np.uint8)
    dot[1, 1] = 255
    line = np.zeros((1, 7), np.uint8)
    line[0, 2:5] = 255
    for picture in (dot, np.eye(5, dtype=np.uint8) * 255, line):
        x = images.prepare_image(Image.fromarray(picture))
        assert x.shape == (28, 28) and x.max() == 255


def test_huge_pictures_are_shrunk_then_read(digits, tmp_path):
    big = Image.fromarray(255 - digits.images[0]).resize((4000, 4000), Image.BILINEAR)
    path = tmp_path / "big.png"
    big.save(path)
    small = images.prepare_image(Image.fromarray(255 - digits.images[0]).resize((112, 112)))
    x = images.prepare_image(path)
    assert np.abs(x.astype(int) - small.astype(int)).mean() < 10


def png_claiming(width: int, height: int) -> bytes:
    """A valid tiny PNG header that claims width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [9_000, 15_000, 60_000])
def test_bombs_are_refused_before_decoding_and_quietly(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(side, side))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not escape
        with pytest.raises(InputError, match="over the limit|too large to decode"):
            images.prepare_image(path)


def test_the_pixel_limit_is_the_applications_to_set(exported, digits, tmp_path):
    path = tmp_path / "d.png"
    Image.fromarray(255 - digits.images[0]).resize((300, 300)).save(path)
    with pytest.raises(InputError, match="over the limit of 50,000"):
        images.prepare_image(path, max_pixels=50_000)
    strict = Predictor(exported / "mnist_cnn.onnx", max_image_pixels=50_000)
    with pytest.raises(InputError, match="over the limit of 50,000"):
        strict.predict_image(path)
    rows = list(strict.predict_files([path]))
    assert rows[0].error and "over the limit" in rows[0].error
    assert images.prepare_image(path, max_pixels=90_000).shape == (28, 28)


def test_polarity_follows_the_majority(digits):
    d = digits.images[5]
    white_on_black = images.prepare_image(Image.fromarray(d))
    dark_on_light = images.prepare_image(Image.fromarray(255 - d))
    np.testing.assert_array_equal(white_on_black, dark_on_light)


def test_thin_strokes_stay_visible(digits):
    im = Image.fromarray(digits.images[7]).resize((168, 168), Image.BICUBIC)
    thin = Image.fromarray(255 - np.asarray(im.filter(ImageFilter.MinFilter(7))))
    x = images.prepare_image(thin)
    assert (x > 128).sum() >= 20  # still a digit, not a few dots


def test_stroke_width_of_a_bar():
    """2 x area / perimeter: a bar of width w and length L measures 2wL / (2L + 2w)."""
    for w in (1, 2, 3, 5):
        bar = np.zeros((28, 28), np.uint8)
        bar[4:24, 10 : 10 + w] = 255
        assert images.stroke_width(bar) == pytest.approx(2 * w * 20 / (2 * 20 + 2 * w))
    assert images.stroke_width(np.zeros((28, 28), np.uint8)) == 0.0


def pen(d: np.ndarray, size: int, grow: bool) -> Image.Image:
    """The digit written with a marker (grow) or a hairline: dark ink on paper, 6x."""
    big = Image.fromarray(d).resize((168, 168), Image.BICUBIC)
    big = big.filter((ImageFilter.MaxFilter if grow else ImageFilter.MinFilter)(size))
    return Image.fromarray(255 - np.asarray(big))


@pytest.mark.parametrize("grow", [True, False], ids=["marker", "hairline"])
def test_marker_and_hairline_strokes_are_brought_to_mnist_width(digits, monkeypatch, grow):
    """Step 9 moves stroke widths outside STROKE_RANGE to its edge; with the step turned off
    (a range that admits every width) the same pictures stay far outside it."""
    pictures = [pen(d, 13 if grow else 9, grow) for d in digits.images[:30]]
    low, high = images.STROKE_RANGE
    widths = np.array([images.stroke_width(images.prepare_image(p)) for p in pictures])
    assert ((widths > low - 0.4) & (widths < high + 0.4)).mean() >= 0.9, widths
    monkeypatch.setattr(images, "STROKE_RANGE", (0.0, 99.0))
    off = np.median([images.stroke_width(images.prepare_image(p)) for p in pictures])
    assert off > high + 0.4 if grow else off < low - 0.3
    assert abs(np.median(widths) - (high if grow else low)) < abs(off - (high if grow else low))


def test_strokes_in_range_are_left_alone(digits, monkeypatch):
    """A digit whose strokes are already MNIST-like comes out exactly as without step 9."""
    picture = Image.fromarray(on_paper(digits.images[0]).astype(np.uint8))
    with_step = images.prepare_image(picture)
    low, high = images.STROKE_RANGE
    assert low <= images.stroke_width(with_step) <= high
    monkeypatch.setattr(images, "STROKE_RANGE", (0.0, 99.0))
    np.testing.assert_array_equal(images.prepare_image(picture), with_step)


@pytest.fixture(scope="module")
def folder(mnist_dir, tmp_path_factory):
    """250 digit files (enough for the worker pool) with unreadable ones among them."""
    root = tmp_path_factory.mktemp("folder")
    for i, d in enumerate(load_split("test", mnist_dir, 247).images):
        Image.fromarray(255 - d).save(root / f"{i:04d}.png")
    (root / "0100b.png").write_text("not an image")
    (root / "0200b.png").write_bytes(b"")
    Image.new("L", (40, 40), 255).save(root / "0050b.png")  # blank paper
    return root


def test_worker_processes_give_the_answers_of_one_process(predictor, folder):
    """Decoding and preparing on every core changes nothing but the speed: the same rows, in
    the same order, errors included."""
    from mnist_edge.edge.predict import expand_inputs

    paths = expand_inputs([folder])
    assert len(paths) >= threads.POOL_MIN_FILES
    pooled = list(predictor.predict_files(paths, workers=2, top=2))
    alone = list(predictor.predict_files(paths, workers=0, top=2))  # this process alone
    assert pooled == alone and len(pooled) == 250
    errors = [r for r in pooled if r.error]
    assert [r.file.rsplit("/", 1)[1] for r in errors] == ["0050b.png", "0100b.png", "0200b.png"]
    assert "blank" in errors[0].error and "not a readable image" in errors[1].error


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_image_names_that_are_not_files_get_an_error_row(
    predictor, digits, tmp_path, monkeypatch, workers
):
    """In a folder, a broken link, a FIFO and a link to a device named like images each get
    their own error row, without being opened (a FIFO would block); a folder named x.png is
    searched, not listed."""
    import os

    from mnist_edge.edge.predict import expand_inputs

    monkeypatch.setattr(threads, "POOL_MIN_FILES", 1)
    Image.fromarray(255 - digits.images[0]).save(tmp_path / "a.png")
    (tmp_path / "broken.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    (tmp_path / "sub.png").mkdir()
    Image.fromarray(255 - digits.images[1]).save(tmp_path / "sub.png" / "b.png")
    rows = list(predictor.predict_files(expand_inputs([tmp_path]), workers=workers))
    names = {r.file.rsplit("/", 1)[1]: r for r in rows}
    assert sorted(names) == ["a.png", "b.png", "broken.png", "fifo.png", "zero.png"]
    assert names["a.png"].error is None and names["b.png"].error is None
    assert names["broken.png"].error.startswith("no image file at")
    for bad in ("fifo.png", "zero.png"):
        assert "(a device, FIFO or socket)" in names[bad].error
    matched = [p.name for p in expand_inputs([str(tmp_path / "*.png")])]  # a pattern: the same
    assert matched == ["a.png", "broken.png", "fifo.png", "zero.png"]


def test_the_median_is_numpys():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 100, 4096):
        v = rng.normal(size=n).astype(np.float32)
        assert images.median(v) == np.median(v) and images.median(v).dtype == np.float32
        w = np.round(rng.normal(size=n) * 3)  # ties
        assert images.median(w) == np.median(w)


def low_resolution(d: np.ndarray, tall: int = 9) -> Image.Image:
    """The digit as a low-resolution scan holds it: `tall` pixels high, dark on white, 4 grey
    levels, not enlarged."""
    small = shrunk_ink(d, tall)
    paper = Image.new("L", (small.width + 4, small.height + 4), 255)
    paper.paste(small, (2, 2))
    return paper.point(lambda v: round(v / 85) * 85)


@pytest.mark.parametrize("factor", [2, 3, 5, 7])
def test_a_nearest_neighbour_enlargement_reads_as_the_small_image(digits, factor):
    """Step 2b: an image enlarged with nearest-neighbour (and cut at an arbitrary place, so the
    blocks do not start at the corner) is read as the small image itself."""
    for d in digits.images[:20]:
        small = low_resolution(d)
        big = small.resize((small.width * factor, small.height * factor), Image.NEAREST)
        cut = big.crop((1, factor - 1, big.width, big.height))  # a partial block on two edges
        assert images.pixel_block(np.asarray(cut, np.float32))[0] == factor
        np.testing.assert_array_equal(images.prepare_image(cut), images.prepare_image(small))


def test_images_that_are_not_pixel_blocks_are_left_alone(digits, tmp_path):
    """MNIST digits, their smooth enlargements and JPEGs of blocky images are not blocks."""
    for d in digits.images[:30]:
        small = low_resolution(d)
        cases = [d, on_paper(d, 3), np.asarray(small.resize((small.width * 4,) * 2, Image.BICUBIC))]
        big = small.resize((small.width * 5, small.height * 5), Image.NEAREST)
        big.save(tmp_path / "b.jpg", quality=30)
        cases.append(np.asarray(Image.open(tmp_path / "b.jpg")))
        for g in cases:
            assert images.pixel_block(np.asarray(g, np.float32))[0] == 1


def test_crops_under_three_quarters_of_the_box_are_enlarged_bicubic(digits):
    """Step 8: a crop of a digit a few pixels tall is enlarged bicubic; MNIST's own crops
    (16-20 px) keep Lanczos, so clean digits read exactly as before."""
    ink = np.asarray(low_resolution(digits.images[0]), np.float32)
    for crop, resample in (
        (255 - ink, Image.BICUBIC),
        (digits.images[0][4:24, 4:24], Image.LANCZOS),
    ):
        crop = crop.astype(np.float32)
        want = images._resized(crop, 20 / max(crop.shape), resample)
        np.testing.assert_allclose(images._fit_box(crop, 20), want * (255 / want.max()), rtol=1e-6)
