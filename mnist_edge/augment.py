"""Training-time augmentations of normalised MNIST batches (N, 1, 28, 28), drawn from a seeded
torch.Generator so that a resumed run sees the same images as one that never stopped.

- `random_shift`: up to 2 pixels in x and y (the default recipe since the start);
- `low_resolution`: a share of each batch becomes what a low-resolution capture of the digit
  looks like once the project's own preprocessing has read it. The ink box is shrunk by area
  averaging (a scanner's or camera's pixels) so that the digit is 7 to 14 pixels tall, put on
  paper with a margin, quantised to 2-8 grey levels (or left smooth), upscaled 2-8x with a smooth
  filter, sometimes blurred, and then passed through `edge.images.prepare_image`, exactly as
  `predict_image` would read such a file. The model is thus trained on its inference input, not
  on a guess of it. Only the training split is ever augmented (benchmarks/realworld.py makes its
  low-resolution groups from the test split, with code of its own).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .edge import spec
from .edge.errors import InputError
from .edge.images import prepare_image

LOW_RES_SHARE = 0.2  # the default recipe's share of each batch made low resolution
LOW_RES_HEIGHTS = (7, 14)  # digit heights (px) a low-resolution capture is made at, inclusive
LOW_RES_LEVELS = (2, 8)  # grey levels it is quantised to, inclusive (or none: see below)
LOW_RES_SMOOTH = 0.25  # share of captures left unquantised
LOW_RES_UPSCALE = (2, 8)  # the upscaling factor, inclusive
LOW_RES_BLUR = 0.5  # share of captures blurred after upscaling (Gaussian, up to 0.6 x factor)
LOW_RES_MARGIN = (1, 3)  # paper around the shrunk digit, px at the low resolution, inclusive


def random_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Shift each image by up to `max_shift` pixels in x and y, filling with background."""
    n, _, h, w = x.shape
    background = (0.0 - spec.MEAN) / spec.STD  # a black pixel after normalisation
    padded = F.pad(x, (max_shift,) * 4, value=background)  # (N, 1, h+2s, w+2s)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (N, h, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (N, 1, w)
    return padded[torch.arange(n)[:, None, None], 0, rows, cols][:, None]  # (N, 1, h, w)


def _draw(gen: torch.Generator, bounds: tuple[int, int]) -> int:
    return int(torch.randint(bounds[0], bounds[1] + 1, (1,), generator=gen))


def _chance(gen: torch.Generator, p: float) -> bool:
    return bool(torch.rand(1, generator=gen) < p)


def low_resolution_capture(digit: np.ndarray, gen: torch.Generator):
    """uint8 (28, 28) light-on-black MNIST digit -> a PIL image of it as a low-resolution scan
    holds it (dark ink on white paper, upscaled back smoothly)."""
    from PIL import Image, ImageFilter

    ys, xs = np.nonzero(digit > 0)
    ink = digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    height = _draw(gen, LOW_RES_HEIGHTS)
    scale = height / max(ink.shape)  # the longer side becomes `height`, keeping the aspect
    size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    small = np.asarray(Image.fromarray(255 - ink).resize(size, Image.BOX), np.float32)
    m = _draw(gen, LOW_RES_MARGIN)
    paper = np.full((size[1] + 2 * m, size[0] + 2 * m), 255.0, np.float32)
    paper[m : m + size[1], m : m + size[0]] = small
    if not _chance(gen, LOW_RES_SMOOTH):
        levels = _draw(gen, LOW_RES_LEVELS) - 1
        paper = np.round(paper / 255.0 * levels) / levels * 255.0
    factor = _draw(gen, LOW_RES_UPSCALE)
    smooth = Image.BICUBIC if _chance(gen, 0.5) else Image.BILINEAR
    image = Image.fromarray(paper.astype(np.uint8))
    image = image.resize((image.width * factor, image.height * factor), smooth)
    if _chance(gen, LOW_RES_BLUR):
        radius = float(torch.rand(1, generator=gen)) * 0.6 * factor
        image = image.filter(ImageFilter.GaussianBlur(radius))
    return image


def low_resolution(x: torch.Tensor, gen: torch.Generator, prob: float) -> torch.Tensor:
    """Each image of the batch, with probability `prob`, replaced by the preprocessed
    low-resolution capture of itself (the others are returned as they were)."""
    picked = torch.nonzero(torch.rand(len(x), generator=gen) < prob).flatten().tolist()
    if not picked:
        return x
    out = x.clone()
    pixels = np.clip(np.rint((x[:, 0].numpy() * spec.STD + spec.MEAN) * 255.0), 0, 255)
    for i in picked:
        digit = pixels[i].astype(np.uint8)
        if not digit.any():
            continue
        try:
            seen = prepare_image(low_resolution_capture(digit, gen))
        except InputError:  # the ink vanished at this size: keep the digit as it was
            continue
        out[i, 0] = torch.from_numpy(spec.normalize(seen))
    return out
