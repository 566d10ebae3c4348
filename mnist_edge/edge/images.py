"""Image files -> MNIST-style 28x28 digits (numpy + Pillow, imported lazily; no torch).

`prepare_image` makes a photo, scan or drawing of one digit look like an MNIST digit, step by
step (each step measured on benchmarks/realworld.py; docs/explanation/measurements.md has the
table):

 1. decode, refusing files over `max_pixels` before decoding (decompression bombs); apply the
    EXIF orientation; transparent pixels become paper white; 16-bit and float images are scaled
    to 0..255; colour becomes luminance;
 2. shrink so that the longer side is at most WORK_SIDE (512) pixels (box filter): the digit
    ends up 20 pixels tall, and this bounds time and memory on huge photos;
 2b. pixel blocks: an image made of flat f x f blocks of pixels (a small image enlarged with
    nearest-neighbour: a thumbnail, a zoomed crop of a low-resolution scan) is taken back to one
    pixel per block, its own resolution, so that steps 7-8 smooth its staircase edges instead of
    keeping them. Decided on the pixels alone: every change between neighbouring rows and columns
    (more than BLOCK_TOLERANCE grey levels) falls on one lattice of period f >= 2, which
    means each block is flat, so nothing is lost; any other image is left alone;
 3. noise: when the pixel-to-pixel noise (robust, from horizontal differences) is above
    NOISE_LEVEL (5 grey levels), a 3x3 median filter;
 4. polarity: MNIST is light ink on black. Fit a plane to the border (mostly paper) by robust
    least squares; the ink is what stands out from it most: when that is darker than the paper
    (0.05th against 99.95th percentile of the residual), invert. Uneven lighting does not fool
    this, as it fools a rule on the median;
 5. background: fit a smooth surface (a quadratic in x and y) to the paper by robust least
    squares on a subsample, trimming the (now light) ink round by round, and subtract it, less
    twice the paper's own spread: gradients vanish, and paper texture with them. For dark ink
    on paper the result is also divided by the local paper brightness (a flat field: light
    multiplies), so a stroke in the shade is as strong as one in the light;
 6. contrast: scale so that the brightest ink (99.9th percentile) is 255; fainter than
    BLANK_LEVEL grey levels above the paper everywhere is a blank image (an error);
 7. crop to the pixels above 30% of that; for noisy images the mask is first opened (3x3) so
    that specks do not widen the crop;
 8. resize the longer side to `box` (20) pixels keeping the aspect ratio (Lanczos; bicubic when
    the crop is under SMALL_INK (3/4) of the box, a digit only a few pixels tall, whose pixels
    Lanczos would ring around; MNIST's own crops are 16-20 pixels), stretch to 0..255 again,
    and place it in 28x28 with its centre of mass at the centre, as MNIST was made;
 9. stroke width: measure it on that 28x28 result (2 x ink area / ink perimeter, ink = pixels
    >= 128). MNIST's strokes are 1.2-2.9 pixels wide (5th-95th percentile of the test set,
    median 1.84). When a stroke is outside STROKE_RANGE (1.5-2.3 px) a marker pen or a hairline,
    the crop is upscaled to 4 x `box` pixels, eroded or dilated (grey-level min/max filter) by
    the difference, and steps 7-8 run again on the result, up to 3 times until the width is in
    range. Digits already in range are left alone, so MNIST's own variety is kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import spec
from .errors import InputError, reading

if TYPE_CHECKING:
    from PIL import Image

# Decoded pixels allowed in one image file (width x height): a phone photo is 12-50 MP; anything
# larger is refused before it is decoded (a decompression bomb can claim gigabytes).
MAX_IMAGE_PIXELS = 64_000_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm",
                  ".ppm", ".pbm", ".pnm")  # fmt: skip
WORK_SIDE = 512  # longer side the image is shrunk to first (the digit ends up 20 px)
NOISE_LEVEL = 5.0  # grey levels of pixel noise above which a median filter is applied
BLANK_LEVEL = 16.0  # grey levels of ink contrast below which an image counts as blank
INK_FRACTION = 0.3  # the crop keeps pixels above this fraction of the brightest ink
BLOCK_TOLERANCE = 8.0  # grey levels two pixels of one flat block may differ by (compression)
MAX_BLOCK = 16  # the largest pixel block (nearest-neighbour enlargement) taken back
SMALL_INK = 0.75  # a crop under this share of the box is enlarged bicubic, not Lanczos
STROKE_RANGE = (1.5, 2.3)  # stroke widths (px in 28x28) left alone; outside, moved to the edge
STROKE_WORK = 4  # the crop is upscaled to this many times `box` to thin or thicken its strokes
STROKE_ROUNDS = 3  # tries to bring a stroke width into STROKE_RANGE


def open_image(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode an image file, refusing sizes over `max_pixels` before decoding them."""
    from PIL import Image

    if not path.is_file():
        kind = ""
        if path.exists():  # never opened: a FIFO would block, a device never end
            kind = " (a folder)" if path.is_dir() else " (a device, FIFO or socket)"
        raise InputError(f"no image file at {path}{kind}")
    with reading(path, "a readable image", InputError), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit replaces it
        im = Image.open(path)
        try:
            w, h = im.size
            if w * h > max_pixels:
                raise InputError(
                    f"{path} is {w}x{h} = {w * h:,} pixels, over the limit of "
                    f"{max_pixels:,} (max_image_pixels); scale it down first"
                )
            im.load()  # a one-frame file is read whole and closed by Pillow itself
        except BaseException:
            im.close()
            raise
        if getattr(im, "fp", None) is None:
            return im
        with im:  # a file of several frames stays open for seeking: keep a copy, close it
            return im.copy()


def load_gray(image: Path | str | Image.Image, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Steps 1-2: float32 (H, W) luminance 0..255, longer side at most WORK_SIDE."""
    from PIL import Image, ImageOps

    if not isinstance(image, Image.Image):
        image = open_image(Path(image), max_pixels)
    elif image.width * image.height > max_pixels:
        raise InputError(f"image of {image.width}x{image.height} is over the pixel limit")
    if image.width < 1 or image.height < 1:
        raise InputError(f"the image is empty ({image.width}x{image.height})")
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / 32-bit / float greys
        a = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(np.nanmax(a)), 1.0)
        image = Image.fromarray(np.clip(np.nan_to_num(a) * (255.0 / top), 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)  # transparent -> paper white
    image = image.convert("L")
    if max(image.size) > WORK_SIDE:
        scale = WORK_SIDE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.BOX)
    return np.asarray(image, dtype=np.float32)


def median(v: np.ndarray) -> np.floating:
    """np.median of a 1-D array, computed the same way (the two middle values' mean for an even
    count) without np.median's per-call overhead, which dominated on small images."""
    n = v.size
    if n % 2:
        return np.partition(v, n // 2)[n // 2]
    part = np.partition(v, (n // 2 - 1, n // 2))
    return np.mean(part[n // 2 - 1 : n // 2 + 1])


def percentiles(a: np.ndarray, qs: tuple[float, ...]) -> list:
    """np.percentile(a, q) for each q (its default "linear" method), bit for bit, from one
    partition: np.percentile's own setup costs more than the partition on small images."""
    v = np.ravel(a)
    n = v.size
    spots = []
    for q in qs:
        virtual = (n - 1) * np.true_divide(q, 100)  # as numpy computes it
        lo = n - 1 if virtual >= n - 1 else max(0, int(np.floor(virtual)))
        hi = lo if virtual >= n - 1 or virtual < 0 else lo + 1
        spots.append((lo, hi, float(virtual - (lo if virtual < n - 1 else -1))))
    part = np.partition(v, sorted({i for lo, hi, _ in spots for i in (lo, hi)}))
    out = []
    for lo, hi, gamma in spots:
        x, y = part[lo], part[hi]
        d = y - x
        out.append(y - d * (1 - gamma) if gamma >= 0.5 else x + d * gamma)
    return out


def noise_level(g: np.ndarray) -> float:
    """Pixel noise in grey levels: robust spread of horizontal neighbour differences / sqrt 2."""
    if g.shape[1] < 2:
        return 0.0
    d = np.diff(g, axis=1).ravel()
    return float(1.4826 * median(np.abs(d - median(d))) / np.sqrt(2))


@lru_cache(maxsize=16)
def _quadratic_terms(h: int, w: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The design matrix (n, 6) of step 5's surface on the subsample grid, and the full grid's
    x (1, w) and y (h, 1) coordinates: the same for every image of one size (a folder's files
    usually share it), so made once."""
    ys = (np.arange(0, h, step, dtype=np.float32) / h - 0.5)[:, None]
    xs = (np.arange(0, w, step, dtype=np.float32) / w - 0.5)[None, :]
    ones = np.ones((len(ys), xs.shape[1]), np.float32)
    terms = [ones, xs * ones, ys * ones, xs * xs * ones, xs * ys, ys * ys * ones]
    a = np.stack([t.ravel() for t in terms], 1).astype(np.float64)
    a.setflags(write=False)
    yy = (np.arange(h, dtype=np.float32) / h - 0.5)[:, None]
    xx = (np.arange(w, dtype=np.float32) / w - 0.5)[None, :]
    return a, xx, yy


def _fit(a: np.ndarray, v: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Least-squares coefficients of a[keep] against v[keep]. Kept values that are all 0 (clean
    paper, once inverted) fit 0 exactly, which is what the solver returns for them: no solver
    is called. Any other values go to the solver as they are, so the answer stays bit for bit
    what it was (its rounding noise steers later steps in near-flat images)."""
    vk = v[keep]
    if not vk.any():
        return np.zeros(6, np.float64)
    return np.linalg.lstsq(a[keep], vk, rcond=None)[0]


def background(g: np.ndarray, rounds: int = 4) -> tuple[np.ndarray, float]:
    """Step 5: a quadratic surface fitted to the paper (the darker majority: the ink is light
    by now) by robust least squares, and the paper's spread around it (grey levels). It starts
    from the pixels at or below the median and, round by round, drops what lies well above the
    surface; once a round keeps the same pixels as the one before, the fit can no longer change
    and the rounds stop."""
    h, w = g.shape
    step = max(1, int(np.sqrt(h * w / 4096)))  # fit on ~4,000 pixels
    sample = g[::step, ::step]
    v = sample.ravel().astype(np.float64)
    mid = median(v)
    # The paper is one flat value, nothing lies below it and nothing within a grey level above
    # it: every round would keep the same pixels and fit that value, so the fit is that value,
    # and the surface below is that value everywhere.
    if v.min() == mid and not ((v > mid) & (v <= mid + 1.0)).any():
        return np.full((h, w), np.float32(mid)), 0.0
    # Clean paper, inverted: at least half the pixels are 0 and none lies below. The first round
    # keeps the zeros and fits 0 exactly (a zero right-hand side), the paper's spread is 0, and
    # the next round keeps v < 1: the same pixels unless some lie strictly between 0 and 1, so
    # the fit is that 0 and the rounds would stop there.
    if mid == 0 and v.min() == 0 and not ((v > 0) & (v < 1.0)).any():
        return np.zeros((h, w), np.float32), 0.0
    a, xx, yy = _quadratic_terms(h, w, step)
    keep = v <= mid
    coef, sigma = np.array([mid, 0, 0, 0, 0, 0], np.float64), 0.0
    for _ in range(rounds):
        if keep.sum() < 12:  # too few pixels for a surface: keep the last (flat at first)
            break
        coef = _fit(a, v, keep)
        r = v - a @ coef
        rk = r[keep]
        sigma = float(1.4826 * median(np.abs(rk - median(rk))))
        kept, keep = keep, r < 2.5 * sigma + 1.0
        if np.array_equal(kept, keep):
            break
    c = coef.astype(np.float32)
    surface = c[0] + c[1] * xx + c[2] * yy + c[3] * xx * xx + c[4] * xx * yy + c[5] * yy * yy
    return surface, sigma


@lru_cache(maxsize=16)
def _border(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 4's grid for an h x w image: the border mask, the plane's terms on the border, and
    the plane's x and y over the whole image (made once per image size)."""
    edge = np.zeros((h, w), bool)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([np.ones(edge.sum()), xx[edge] / w, yy[edge] / h], 1)
    for array in (edge, a):
        array.setflags(write=False)
    return edge, a, (xx / w, yy / h)


def dark_ink(g: np.ndarray) -> bool:
    """Step 4: whether the ink is darker than the paper. A plane (uneven lighting) is fitted to
    the border, which is mostly paper; the ink is what stands out from it most, darker or
    lighter (0.05th against 99.95th percentile of the residual: the ink may be a small part)."""
    h, w = g.shape
    if h < 3 or w < 3:
        return bool(median(g.ravel()) > 127)
    edge, a, (x, y) = _border(h, w)
    v = g[edge].astype(np.float64)
    if v.min() == v.max():  # a border of one value (clean paper): the plane is that value
        lo, hi = percentiles(g - v[0], (0.05, 99.95))
        return bool(-lo > hi)
    keep = np.ones(v.shape, bool)
    coef = np.array([median(v), 0.0, 0.0])
    for _ in range(3):  # robust: drop border pixels far off the plane (ink touching the edge)
        coef = np.linalg.lstsq(a[keep], v[keep], rcond=None)[0]
        r = v - a @ coef
        keep = np.abs(r) <= 2.5 * 1.4826 * median(np.abs(r)) + 1.0
        if keep.sum() < 3:
            break
    plane = coef[0] + coef[1] * x + coef[2] * y
    lo, hi = percentiles(g - plane, (0.05, 99.95))
    return bool(-lo > hi)


def _clip255(a: np.ndarray) -> np.ndarray:
    """np.clip(a, 0, 255), without np.clip's call overhead (it dominated on 28x28 arrays)."""
    return np.minimum(np.maximum(a, 0), 255)


def _filtered(a: np.ndarray, name: str, size: int = 3) -> np.ndarray:
    """A size x size median, min or max filter of `a` (clipped to uint8), edges replicated, as
    Pillow's MedianFilter, MinFilter and MaxFilter compute it. Min and max are computed here, as
    a row pass then a column pass over the edge-padded image: the same numbers (a square's max
    is the max of its rows' maxes), without Pillow's per-pixel sort of the whole window, which
    took 2.6 ms for a 9x9 window on an 80x60 crop (7.9 ms at 17x17) against ~0.03 ms."""
    u8 = _clip255(a).astype(np.uint8)
    if name == "median":
        from PIL import Image, ImageFilter

        return np.asarray(Image.fromarray(u8).filter(ImageFilter.MedianFilter(size)), np.float32)
    pick = np.maximum if name == "max" else np.minimum
    r = size // 2
    p = np.pad(u8, r, mode="edge")
    h, w = u8.shape
    rows = p[:, :w].copy()
    for i in range(1, size):
        pick(rows, p[:, i : i + w], out=rows)
    out = rows[:h].copy()
    for i in range(1, size):
        pick(out, rows[i : i + h], out=out)
    return out.astype(np.float32)


def ink_image(g: np.ndarray) -> tuple[np.ndarray, bool]:
    """Steps 3-6: light ink on black, background and noise removed, brightest ink at 255;
    and whether the image was noisy."""
    noisy = noise_level(g) > NOISE_LEVEL and min(g.shape) >= 16
    if noisy:
        g = _filtered(g, "median")
    dark = dark_ink(g)
    if dark:  # MNIST is light ink on black
        g = 255.0 - g
    surface, sigma = background(g)
    ink = np.maximum(g - surface - 2.0 * sigma, 0)
    if dark:  # light on paper multiplies: divide by the local paper brightness (flat field)
        ink *= 255.0 / np.maximum(255.0 - surface, 16.0)
    peak = float(percentiles(ink, (99.9,))[0]) if ink.size > 2000 else float(ink.max())
    peak = max(peak, 0.5 * float(ink.max()))
    if peak < BLANK_LEVEL:
        raise InputError("the image looks blank: no ink stands out from the background")
    return _clip255(ink * (255.0 / peak)), noisy


def prepare_image(
    image: Path | str | Image.Image, *, box: int = 20, max_pixels: int = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """A photo, scan or drawing of one digit -> uint8 (28, 28), white ink on black, centred by
    mass in a 20-pixel box, as MNIST was made (the steps are in this module's docstring)."""
    if not 1 <= box <= spec.IMAGE_SIZE:
        raise InputError(f"box must be 1..{spec.IMAGE_SIZE} pixels, got {box}")
    ink, noisy = ink_image(native_resolution(load_gray(image, max_pixels)))
    mask = ink > INK_FRACTION * 255
    if noisy:  # specks left by the noise must not widen the crop
        opened = _filtered(_filtered(mask * 255.0, "min"), "max") > 0
        mask = opened if opened.any() else mask
    crop = _crop(ink, mask)
    digit = center_by_mass(_fit_box(crop, box))
    width = stroke_width(digit)
    low, high = STROKE_RANGE
    if low <= width <= high:
        return digit
    restroked = _restroke(crop, box, width)
    return digit if restroked is None else restroked


def _changes(g: np.ndarray, axis: int) -> np.ndarray:
    """Positions i where line i and line i+1 of `g` along `axis` differ somewhere."""
    step = np.abs(np.diff(g, axis=axis)).max(axis=1 - axis)
    return np.flatnonzero(step > BLOCK_TOLERANCE)


def pixel_block(g: np.ndarray) -> tuple[int, int, int]:
    """Step 2b's evidence: (f, row offset, column offset) of the lattice of flat f x f blocks
    that `g` is made of, or (1, 0, 0) when it is not made of blocks (f = the greatest common
    divisor of the distances between changes, on both axes at once)."""
    rows, cols = _changes(g, 0), _changes(g, 1)
    if len(rows) < 2 or len(cols) < 2:
        return 1, 0, 0
    f = int(np.gcd.reduce(np.concatenate([np.diff(rows), np.diff(cols)])))
    if not 2 <= f <= MAX_BLOCK:
        return 1, 0, 0
    return f, int(rows[0] + 1) % f, int(cols[0] + 1) % f


def native_resolution(g: np.ndarray) -> np.ndarray:
    """Step 2b: an image of flat f x f pixel blocks -> one pixel per block (a partial block at
    an edge counts as a block); any other image as it is."""
    f, top, left = pixel_block(g)
    if f == 1:
        return g
    h, w = g.shape
    rows = ([0] if top else []) + list(range(top, h, f))
    cols = ([0] if left else []) + list(range(left, w, f))
    return np.ascontiguousarray(g[np.ix_(rows, cols)])


def _crop(ink: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _resized(a: np.ndarray, scale: float, resample: int) -> np.ndarray:
    from PIL import Image

    h, w = a.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = Image.fromarray(_clip255(a).astype(np.uint8))
    return np.asarray(img.resize(size, resample), dtype=np.float32)


def _fit_box(crop: np.ndarray, box: int) -> np.ndarray:
    """Step 8's resize: the longer side to `box` pixels (Lanczos; bicubic to enlarge a crop
    under SMALL_INK of the box), brightest ink at 255."""
    from PIL import Image

    smooth = Image.BICUBIC if max(crop.shape) < SMALL_INK * box else Image.LANCZOS
    digit = _resized(crop, box / max(crop.shape), smooth)
    if digit.max() <= 0:
        raise InputError("the image looks blank: the ink vanished when scaled to 20 pixels")
    return digit * (255.0 / digit.max())


def stroke_width(digit: np.ndarray) -> float:
    """Mean stroke width in pixels of a 28x28 digit: 2 x area / perimeter of the pixels >= 128
    (a stroke of width w and length L has area wL and perimeter about 2L; the image's own edge
    counts as background)."""
    m = digit >= 128
    area = int(np.count_nonzero(m))
    inner = np.count_nonzero(m[:, 1:] != m[:, :-1]) + np.count_nonzero(m[1:, :] != m[:-1, :])
    rim = (np.count_nonzero(m[:, 0]) + np.count_nonzero(m[:, -1]) + np.count_nonzero(m[0])
           + np.count_nonzero(m[-1]))  # fmt: skip
    perimeter = int(inner + rim)
    return 2.0 * area / perimeter if perimeter else 0.0


def _restroke(crop: np.ndarray, box: int, width: float) -> np.ndarray | None:
    """Step 9: thin or thicken the strokes of `crop` until the 28x28 result's stroke width is
    in STROKE_RANGE (at most STROKE_ROUNDS tries: the width measured at grey level 128 does not
    move linearly with the filter); None when no try was possible."""
    from PIL import Image

    low, high = STROKE_RANGE
    big = _resized(crop, STROKE_WORK * box / max(crop.shape), Image.BICUBIC)
    radius, best = 0, None  # radius > 0 thickens, < 0 thins (upscaled pixels per side)
    for _ in range(STROKE_ROUNDS):
        target = min(max(width, low), high)
        radius += round((target - width) / 2 * STROKE_WORK)
        if radius == 0 or target == width:
            break
        stroked = _filtered(big, "max" if radius > 0 else "min", 2 * abs(radius) + 1)
        if stroked.max() < BLANK_LEVEL:
            break
        best = center_by_mass(_fit_box(_crop(stroked, stroked > INK_FRACTION * stroked.max()), box))
        width = stroke_width(best)
    return best


def center_by_mass(digit: np.ndarray, side: int = spec.IMAGE_SIZE) -> np.ndarray:
    """Place a (h, w) digit in side x side so that its centre of mass is at the centre."""
    total = digit.sum()
    cy = (digit.sum(axis=1) * np.arange(digit.shape[0])).sum() / total
    cx = (digit.sum(axis=0) * np.arange(digit.shape[1])).sum() / total
    top = min(max(round(side / 2 - 0.5 - cy), 0), side - digit.shape[0])
    left = min(max(round(side / 2 - 0.5 - cx), 0), side - digit.shape[1])
    canvas = np.zeros((side, side), np.float32)
    canvas[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return _clip255(canvas).astype(np.uint8)


# --- many files: worker processes decode and prepare them ---------------------------------------
POOL_CHUNK = 32  # files a worker prepares per request
IN_FLIGHT = 8  # requests a worker holds at once


def prepare_files(paths: list[str], max_pixels: int = MAX_IMAGE_PIXELS) -> list[tuple]:
    """[(28x28 uint8 or None, error or None)] for each file: what a worker answers."""
    out = []
    for path in paths:
        try:
            out.append((prepare_image(path, max_pixels=max_pixels), None))
        except InputError as exc:
            out.append((None, str(exc)))
    return out


def prepared_stream(
    paths: list[Path], max_pixels: int = MAX_IMAGE_PIXELS, workers: int = 0,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[Path, np.ndarray | None, str | None]]:  # fmt: skip
    """(path, prepared digit or None, error or None) for each path, in order. With `workers`
    >= 1, that many worker processes (started with `env`: threads.Pools.worker_env caps their
    BLAS threads) decode and prepare them, at most IN_FLIGHT chunks each at a time, so memory
    stays flat however many files there are; with 0, this process does.

    The workers are plain `python -m mnist_edge.edge.images` processes fed through pipes, not a
    multiprocessing pool: a pool's "spawn" re-runs the caller's script in every worker (a script
    without an `if __name__ == "__main__"` guard would start workers without end), and "fork"
    copies a process whose inference engine runs threads, which can deadlock."""
    if workers < 1 or not paths:
        for path in paths:
            ((digit, error),) = prepare_files([path], max_pixels)
            yield path, digit, error
        return
    chunks = [paths[i : i + POOL_CHUNK] for i in range(0, len(paths), POOL_CHUNK)]
    with _Workers(min(workers, len(chunks)), max_pixels, env) as pool:
        first = 0
        while first < len(chunks) and not pool.started():  # workers import numpy and Pillow
            for path, (digit, error) in zip(chunks[first], prepare_files(
                    [str(p) for p in chunks[first]], max_pixels), strict=True):  # fmt: skip
                yield path, digit, error
            first += 1
        pool.first = sent = first
        for done in range(first, len(chunks)):
            while sent < len(chunks) and sent < done + IN_FLIGHT * pool.n:
                pool.send(sent, [str(p) for p in chunks[sent]])
                sent += 1
            for path, (digit, error) in zip(chunks[done], pool.receive(done), strict=True):
                yield path, digit, error


READY = "mnist-edge images worker ready"
PIPE_BYTES = 1 << 20  # a worker's answers may wait in its pipe: ~40 chunks of 32 digits


def _widen(pipe: object) -> None:
    """Let a worker run IN_FLIGHT chunks ahead while this process runs the model: a default
    64 KiB pipe holds two answers, and the worker then stood idle during each model call."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (ImportError, OSError, ValueError, AttributeError):
        pass  # not Linux, or above the system's limit: the default size still works


class _Workers:
    """N worker processes; chunk i (from `first` on) goes to worker (i - first) % N, whose
    answers come back in order. Each worker says READY once it has imported what it needs;
    until one has, the caller prepares chunks itself (`started`)."""

    first = 0

    def __init__(self, n: int, max_pixels: int, env: dict[str, str] | None = None) -> None:
        import subprocess
        import sys

        self.n = n
        cmd = [sys.executable, "-m", "mnist_edge.edge.images", str(max_pixels)]
        self.procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       env=env) for _ in range(n)]  # fmt: skip
        self.greeted = [False] * n
        for proc in self.procs:
            _widen(proc.stdout)

    def started(self) -> bool:
        """Whether a worker has said READY (or ended): it can take chunks from now on."""
        import select

        try:
            readable, _, _ = select.select([p.stdout for p in self.procs], [], [], 0)
        except (OSError, ValueError):  # no select on pipes here: take them as started
            return True
        return bool(readable)

    def send(self, i: int, paths: list[str]) -> None:
        import pickle

        pipe = self.procs[(i - self.first) % self.n].stdin
        pickle.dump(paths, pipe, protocol=pickle.HIGHEST_PROTOCOL)
        pipe.flush()

    def receive(self, i: int) -> list[tuple]:
        import pickle

        k = (i - self.first) % self.n
        try:
            if not self.greeted[k]:
                if pickle.load(self.procs[k].stdout) != READY:
                    raise pickle.UnpicklingError("no greeting")
                self.greeted[k] = True
            return pickle.load(self.procs[k].stdout)  # our own worker's answer
        except (EOFError, pickle.UnpicklingError) as exc:
            code = self.procs[k].poll()
            raise InputError(f"a worker preparing images stopped (exit {code})") from exc

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            try:
                proc.stdin.close()  # a worker ends at the end of its input
            except OSError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=0 if exc[0] is not None else 10)
            except Exception:  # interrupted, or still busy: stop it
                proc.kill()
                proc.wait()


def _serve(max_pixels: int) -> None:
    """A worker: read lists of paths (pickled) from stdin, answer prepare_files for each."""
    import pickle
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    from PIL import Image, ImageOps  # noqa: F401  (loaded before saying READY)

    pickle.dump(READY, sys.stdout.buffer, protocol=pickle.HIGHEST_PROTOCOL)
    sys.stdout.buffer.flush()
    while True:
        try:
            paths = pickle.load(sys.stdin.buffer)
        except EOFError:
            return
        pickle.dump(prepare_files(paths, max_pixels), sys.stdout.buffer,
                    protocol=pickle.HIGHEST_PROTOCOL)  # fmt: skip
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    import sys

    _serve(int(sys.argv[1]))
