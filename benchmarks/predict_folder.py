"""Images/s of `mnist-edge predict FOLDER`: decode + preprocess + inference, end to end.

Writes the 10,000 official test digits as PNG files (dark ink on white, 28x28, as a scan would
come; `--scale 4` makes them 112x112), then times the library call the CLI makes (Predictor over
expand_inputs(FOLDER), rows to a CSV file) and, separately, the bare Predictor.predict on the
same digits as uint8 arrays. Writes benchmarks/results/predict_folder.json.

    python benchmarks/predict_folder.py --model exports/mnist_cnn.onnx [--scale 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import write_report
from PIL import Image

from mnist_edge.edge.data import load_split
from mnist_edge.edge.predict import write_rows
from mnist_edge.edge.runtime import Predictor, expand_inputs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="exports/mnist_cnn.onnx")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--scale", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/predict_folder.json")
    a = p.parse_args()
    test = load_split("test")
    predictor = Predictor(a.model, threads=a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "digits"
        folder.mkdir()
        for i, digit in enumerate(test.images):
            im = Image.fromarray(255 - digit)
            if a.scale > 1:
                im = im.resize((28 * a.scale,) * 2, Image.BILINEAR)
            im.save(folder / f"{i:05d}.png")
        t0 = time.perf_counter()
        rows = list(predictor.predict_files(expand_inputs([folder])))
        write_rows(Path(tmp) / "rows.csv", rows, 1)
        files_s = time.perf_counter() - t0
    labels = np.array([r.label for r in rows])
    t0 = time.perf_counter()
    arrays = predictor.predict(test.images)
    arrays_s = time.perf_counter() - t0
    report = {
        "model": a.model, "threads": a.threads, "files": len(rows), "pixels": 28 * a.scale,
        "files_images_per_s": len(rows) / files_s, "files_seconds": files_s,
        "arrays_images_per_s": len(test.images) / arrays_s,
        "files_accuracy": float((labels == test.labels).mean() * 100),
        "arrays_accuracy": float((arrays.labels == test.labels).mean() * 100),
        "errors": sum(r.error is not None for r in rows),
    }  # fmt: skip
    print(f"{len(rows)} PNG files ({28 * a.scale}x{28 * a.scale}): "
          f"{report['files_images_per_s']:.0f} images/s end to end (accuracy "
          f"{report['files_accuracy']:.2f}%); bare predict on arrays "
          f"{report['arrays_images_per_s']:.0f} images/s")  # fmt: skip
    write_report(a.out, report)


if __name__ == "__main__":
    main()
