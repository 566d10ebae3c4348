"""Real-world digits: accuracy of Predictor.predict_image on image files, by kind of image.

Makes the images from what is available offline and writes them to disk as a user would have
them, then feeds every file through the project's preprocessing (images.prepare_image, what
predict_image and `mnist-edge predict` use) and through the plain MNIST-style baseline pipeline
described in the real-world issue, and reports accuracy per group for the fp32 and INT8 models.

Groups:
  fonts, dark on light / light on dark: digits rendered in every installed font that has
      distinct digit glyphs (Debian font packages, matplotlib's), at several sizes, weights (the
      fonts' own and added strokes), rotations and positions, saved as PNG and JPEG;
  MNIST test digits degraded the way real captures are (the same first N test digits in every
      group): as-is, upscaled 4-10x with blur, thick strokes, thin strokes, low contrast,
      gradient lighting, noise, JPEG artefacts, off-centre on a large canvas, coloured ink and
      paper (RGB), transparent PNG, and low resolution: the digit shrunk by area averaging to
      8, 10 and 12 pixels tall, quantised to a few grey levels and upscaled smoothly, as digits
      cropped from low-resolution scans are; and at 8 px enlarged pixelated (nearest-neighbour)
      or not enlarged at all.

    python benchmarks/realworld.py --model exports/mnist_cnn.onnx [--int8 M.int8.onnx]
           [--per-group 300] [--fonts 80] [--keep DIR] [--out benchmarks/results/realworld.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _report import print_table, write_report
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from mnist_edge.edge.data import load_split
from mnist_edge.edge.images import prepare_image
from mnist_edge.edge.runtime import Predictor

SKIP_FONT_WORDS = ("symbol", "math", "music", "emoji", "dingbat", "cmex", "cmsy", "cmmi",
                   "stixsiz", "stixnonuni", "wingding", "ornament", "braille")  # fmt: skip


# --- the baseline: "a plain MNIST-style pipeline written outside the project" -------------------
def baseline_prepare(path: Path) -> np.ndarray:
    """grey; invert when the median is light; subtract the median as background; crop to pixels
    above 20% of the maximum; Lanczos-resize the longer side to 20; stretch to 0..255; paste in
    28x28; shift the centre of mass to the centre."""
    im = Image.open(path)
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba)
    g = np.asarray(im.convert("L"), np.float32)
    if np.median(g) > 127:
        g = 255 - g
    g = np.clip(g - np.median(g), 0, None)
    if g.max() <= 0:
        return np.zeros((28, 28), np.uint8)
    ys, xs = np.nonzero(g > 0.2 * g.max())
    crop = g[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = crop.shape
    s = 20 / max(h, w)
    small = Image.fromarray(crop).resize((max(1, round(w * s)), max(1, round(h * s))),
                                         Image.LANCZOS)  # fmt: skip
    d = np.clip(np.asarray(small, np.float32), 0, None)
    d = d * (255 / d.max()) if d.max() > 0 else d
    canvas = np.zeros((28, 28), np.float32)
    top, left = (28 - d.shape[0]) // 2, (28 - d.shape[1]) // 2
    canvas[top : top + d.shape[0], left : left + d.shape[1]] = d
    total = canvas.sum()
    cy = (canvas.sum(1) * np.arange(28)).sum() / total
    cx = (canvas.sum(0) * np.arange(28)).sum() / total
    canvas = np.roll(canvas, (round(13.5 - cy), round(13.5 - cx)), axis=(0, 1))
    return np.clip(canvas, 0, 255).astype(np.uint8)


# --- fonts --------------------------------------------------------------------------------------
def digit_fonts(limit: int) -> list[Path]:
    """Installed fonts whose ten digit glyphs are all different (no symbol or tofu fonts)."""
    out = subprocess.run(["fc-list", ":", "file"], capture_output=True, text=True).stdout
    files = sorted({Path(line.split(":")[0].strip()) for line in out.splitlines()})
    files += sorted(Path(__import__("matplotlib").get_data_path(), "fonts", "ttf").glob("*.ttf"))
    good, seen = [], set()
    for f in files:
        if f.suffix.lower() not in (".ttf", ".otf") or f.name in seen:
            continue
        if any(w in f.name.lower() for w in SKIP_FONT_WORDS):
            continue
        try:
            font = ImageFont.truetype(str(f), 32)
        except OSError:
            continue
        glyphs = set()
        for d in "0123456789":
            im = Image.new("L", (48, 48))
            ImageDraw.Draw(im).text((24, 24), d, font=font, fill=255, anchor="mm")
            glyphs.add(im.tobytes())
        if len(glyphs) == 10 and max(len(g.strip(b"\0")) for g in glyphs) > 0:
            good.append(f)
            seen.add(f.name)
    rng = np.random.default_rng(0)
    return [good[i] for i in sorted(rng.permutation(len(good))[:limit])]


def render_font_digit(
    font: Path, digit: int, rng: np.random.Generator, dark_ink: bool
) -> Image.Image:
    size = int(rng.choice([24, 40, 64, 120]))
    f = ImageFont.truetype(str(font), size)
    w, h = int(size * rng.uniform(1.6, 3.0)), int(size * rng.uniform(1.6, 3.0))
    im = Image.new("L", (w, h), 0)
    stroke = int(rng.choice([0, 0, 1, max(1, size // 24)]))  # extra weight on some
    pos = (w / 2 + rng.uniform(-0.2, 0.2) * w / 2, h / 2 + rng.uniform(-0.2, 0.2) * h / 2)
    ImageDraw.Draw(im).text(pos, str(digit), font=f, fill=255, anchor="mm", stroke_width=stroke,
                            stroke_fill=255)  # fmt: skip
    im = im.rotate(float(rng.uniform(-12, 12)), resample=Image.BICUBIC, expand=False)
    paper, ink = int(rng.uniform(200, 255)), int(rng.uniform(0, 70))
    a = np.asarray(im, np.float32) / 255
    pixels = paper + (ink - paper) * a if dark_ink else ink + (paper - ink) * a
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


# --- degradations of MNIST test digits (white ink on black, 28x28 uint8) ------------------------
def _up(d: np.ndarray, s: int, blur: float = 0.0) -> Image.Image:
    im = Image.fromarray(255 - d).resize((28 * s, 28 * s), Image.BICUBIC)  # dark ink on paper
    return im.filter(ImageFilter.GaussianBlur(blur)) if blur else im


def as_is(d, rng):
    return Image.fromarray(d)  # exactly MNIST: white on black, 28x28


def upscaled_blur(d, rng):
    s = int(rng.integers(4, 11))
    return _up(d, s, blur=s * rng.uniform(0.3, 0.8))


def thick(d, rng):
    # MaxFilter on the white-on-black image dilates the ink (about 2x the stroke at 6x)
    im = Image.fromarray(d).resize((168, 168), Image.BICUBIC).filter(ImageFilter.MaxFilter(9))
    return Image.fromarray(255 - np.asarray(im))


def thin(d, rng):
    im = Image.fromarray(d).resize((168, 168), Image.BICUBIC).filter(ImageFilter.MinFilter(7))
    return Image.fromarray(255 - np.asarray(im))


def low_contrast(d, rng):
    a = np.asarray(_up(d, 4), np.float32) / 255
    paper, ink = rng.uniform(150, 200), rng.uniform(100, 130)
    return Image.fromarray((ink + (paper - ink) * a).astype(np.uint8))


def gradient_lighting(d, rng):
    a = np.asarray(_up(d, 6), np.float32) / 255  # 1 paper, 0 ink
    h, w = a.shape
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    light = 0.45 + 0.55 * (np.cos(angle) * xx + np.sin(angle) * yy - min(0, np.cos(angle))
                           - min(0, np.sin(angle))) / 1.5  # fmt: skip
    return Image.fromarray(np.clip(255 * light * (0.15 + 0.85 * a), 0, 255).astype(np.uint8))


def noise(d, rng):
    a = np.asarray(_up(d, 4), np.float32)
    return Image.fromarray(np.clip(a + rng.normal(0, 30, a.shape), 0, 255).astype(np.uint8))


def jpeg_artefacts(d, rng):
    return _up(d, 4)  # saved as JPEG at quality 8-20 (see SAVE)


def off_centre(d, rng):
    s = int(rng.integers(3, 6))
    digit = _up(d, s)
    canvas = Image.new(
        "L", (int(28 * s * rng.uniform(3, 5)), int(28 * s * rng.uniform(2.5, 4))), 255
    )
    x = int(rng.integers(0, canvas.width - digit.width))
    y = int(rng.integers(0, canvas.height - digit.height))
    canvas.paste(digit, (x, y))
    return canvas


def coloured(d, rng):
    a = np.asarray(_up(d, 5), np.float32)[..., None] / 255
    inks = [(20, 40, 150), (150, 20, 30), (10, 90, 40), (40, 40, 40)]
    papers = [(250, 240, 200), (210, 230, 250), (255, 255, 255), (230, 230, 210)]
    ink = np.array(inks[rng.integers(len(inks))], np.float32)
    paper = np.array(papers[rng.integers(len(papers))], np.float32)
    return Image.fromarray((ink + (paper - ink) * a).astype(np.uint8), "RGB")


def transparent(d, rng):
    alpha = np.asarray(Image.fromarray(d).resize((112, 112), Image.BICUBIC))
    rgba = np.zeros((112, 112, 4), np.uint8)  # black ink, alpha = the digit, no paper at all
    rgba[..., 3] = alpha
    return Image.fromarray(rgba, "RGBA")


def low_resolution(size: int, enlarge: str | None = "bicubic") -> Callable:
    """A digit as a low-resolution scan holds it: the ink's box, padded square, shrunk by area
    averaging so the digit is `size` pixels tall, 1 px of paper around it, quantised to 3-6
    grey levels, then upscaled 3-6x with a smooth (bicubic) filter; or with nearest-neighbour
    (pixelated, as an image viewer or a browser zooms); or left at its own size."""

    def make(d: np.ndarray, rng: np.random.Generator) -> Image.Image:
        ys, xs = np.nonzero(d > 0)
        box = d[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        side = max(box.shape)
        square = np.zeros((side, side), np.uint8)
        y0, x0 = (side - box.shape[0]) // 2, (side - box.shape[1]) // 2
        square[y0 : y0 + box.shape[0], x0 : x0 + box.shape[1]] = box
        small = np.asarray(Image.fromarray(255 - square).resize((size, size), Image.BOX))
        paper = np.full((size + 2, size + 2), 255, np.uint8)
        paper[1:-1, 1:-1] = small
        levels = int(rng.integers(3, 7))
        q = np.round(paper / 255 * (levels - 1)) / (levels - 1) * 255
        up = (size + 2) * int(rng.integers(3, 7))
        small = Image.fromarray(q.astype(np.uint8))
        if enlarge is None:
            return small
        return small.resize((up, up), Image.NEAREST if enlarge == "nearest" else Image.BICUBIC)

    return make


DEGRADATIONS: dict[str, Callable] = {
    "mnist as-is": as_is, "upscaled 4-10x + blur": upscaled_blur, "thick strokes": thick,
    "thin strokes": thin, "low contrast": low_contrast, "gradient lighting": gradient_lighting,
    "noise": noise, "jpeg artefacts": jpeg_artefacts, "off-centre, large canvas": off_centre,
    "coloured ink and paper (RGB)": coloured, "transparent png": transparent,
    "low resolution 8 px": low_resolution(8), "low resolution 10 px": low_resolution(10),
    "low resolution 12 px": low_resolution(12),
    "low resolution 8 px, pixelated": low_resolution(8, "nearest"),
    "low resolution 8 px, not enlarged": low_resolution(8, None),
}  # fmt: skip


def save(im: Image.Image, path: Path, rng: np.random.Generator, group: str) -> Path:
    if group == "jpeg artefacts":
        path = path.with_suffix(".jpg")
        im.save(path, quality=int(rng.integers(8, 21)))
    elif group.startswith("fonts") and rng.random() < 0.5:
        path = path.with_suffix(".jpg")
        im.save(path, quality=int(rng.integers(60, 95)))
    else:
        im.save(path.with_suffix(".png"))
        path = path.with_suffix(".png")
    return path


def make_images(root: Path, per_group: int, n_fonts: int) -> tuple[dict[str, list], list[str]]:
    """{group: [(file, label)]} written under root; the fonts used."""
    rng = np.random.default_rng(0)
    groups: dict[str, list] = {}
    fonts = digit_fonts(n_fonts)
    for dark in (True, False):
        name = "fonts, dark on light" if dark else "fonts, light on dark"
        folder = root / name.replace(" ", "_").replace(",", "")
        folder.mkdir(parents=True)
        rows = []
        for i in range(per_group):
            font, digit = fonts[i % len(fonts)], int(rng.integers(10))
            im = render_font_digit(font, digit, rng, dark)
            rows.append((save(im, folder / f"{i:04d}", rng, name), digit))
        groups[name] = rows
    test = load_split("test", limit=per_group)
    for name, fn in DEGRADATIONS.items():
        folder = root / "".join(c if c.isalnum() else "_" for c in name)
        folder.mkdir(parents=True)
        pairs = enumerate(zip(test.images, test.labels, strict=True))
        groups[name] = [
            (save(fn(d, rng), folder / f"{i:04d}", rng, name), int(label))
            for i, (d, label) in pairs
        ]
    return groups, [f.name for f in fonts]


def prepared(rows: list, pipeline: Callable) -> np.ndarray:
    return np.stack([pipeline(path) for path, _ in rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="exports/mnist_cnn.onnx")
    p.add_argument("--int8", default=None, help="Default: mnist_cnn.int8.onnx beside --model.")
    p.add_argument("--per-group", type=int, default=300)
    p.add_argument("--fonts", type=int, default=80)
    p.add_argument("--keep", default=None, help="Keep the images in this folder.")
    p.add_argument("--out", default="benchmarks/results/realworld.json")
    p.add_argument("--label", default="", help="A note stored in the report (e.g. 'before').")
    a = p.parse_args()
    int8 = Path(a.int8) if a.int8 else Path(a.model).with_name("mnist_cnn.int8.onnx")
    models = {"fp32": Predictor(a.model)}
    if int8.is_file():
        models["int8"] = Predictor(int8)
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="realworld-"))
    if root.exists() and a.keep:
        shutil.rmtree(root)
    groups, fonts = make_images(root, a.per_group, a.fonts)
    (root / "labels.json").write_text(json.dumps({g: [[str(f), y] for f, y in rows]
                                                  for g, rows in groups.items()}))  # fmt: skip
    pipelines = {"predict_image": prepare_image, "baseline": baseline_prepare}
    result: dict[str, dict] = {}
    for group, rows in groups.items():
        labels = np.array([label for _, label in rows])
        result[group] = {"n": len(rows)}
        for pname, pipeline in pipelines.items():
            x = prepared(rows, pipeline)
            for mname, model in models.items():
                acc = float((model.predict(x).labels == labels).mean() * 100)
                result[group][f"{pname} {mname}"] = acc
    cols = [f"{pn} {mn}" for pn in pipelines for mn in models]
    overall = {c: float(np.mean([r[c] for r in result.values()])) for c in cols}
    degraded = [g for g in DEGRADATIONS if g != "mnist as-is"]
    clean = result["mnist as-is"]
    worst_gap = {c: max(clean[c] - result[g][c] for g in degraded) for c in cols}
    rows = [[g, str(r["n"]), *(f"{r[c]:.1f}" for c in cols)] for g, r in result.items()]
    rows.append(["mean over groups", "", *(f"{overall[c]:.1f}" for c in cols)])
    rows.append(["worst degraded gap to as-is", "", *(f"{worst_gap[c]:.1f}" for c in cols)])
    print_table(["group", "n", *cols], rows)
    write_report(a.out, {"label": a.label, "model": a.model, "int8_model": str(int8),
                         "per_group": a.per_group, "fonts": fonts, "groups": result,
                         "mean_over_groups": overall, "worst_degraded_gap": worst_gap})  # fmt: skip
    if not a.keep:
        shutil.rmtree(root)
    print(json.dumps({"mean_over_groups": overall}))


if __name__ == "__main__":
    main()
