"""Images/s of `mnist-edge predict FOLDER`: decode + preprocess + inference, end to end.

Writes the 10,000 official test digits as PNG files (dark ink on white, 28x28, as a scan would
come; `--scale 4` makes them 112x112), then times the library call the CLI makes (Predictor over
expand_inputs(FOLDER), rows to a CSV file) with `--workers` processes preparing the images, and,
separately, the bare Predictor.predict on the same digits as uint8 arrays. Peak RSS of this
process and of its largest worker. Writes benchmarks/results/predict_folder.json.

    python benchmarks/predict_folder.py --model exports/mnist_cnn.onnx [--scale 1] [--threads 2]
        [--workers 2] [--labels FILE.npy]   (--labels: compare the answers with a saved run)
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import write_report
from PIL import Image

from mnist_edge.edge.data import load_split
from mnist_edge.edge.machine import peak_rss_mb, reset_peak_rss
from mnist_edge.edge.predict import write_rows
from mnist_edge.edge.runtime import Predictor, expand_inputs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="exports/mnist_cnn.onnx")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--scale", type=int, default=1)
    p.add_argument("--workers", type=int, default=None, help="default: one per core")
    p.add_argument("--labels", help="a .npy of an earlier run's labels: say how many differ")
    p.add_argument("--save-labels", help="write this run's labels here (.npy)")
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
        reset_peak_rss()
        t0 = time.perf_counter()
        rows = list(predictor.predict_files(expand_inputs([folder]), workers=a.workers))
        write_rows(Path(tmp) / "rows.csv", rows, 1)
        files_s = time.perf_counter() - t0
        parent_mb = peak_rss_mb()
        worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    labels = np.array([r.label for r in rows])
    t0 = time.perf_counter()
    arrays = predictor.predict(test.images)
    arrays_s = time.perf_counter() - t0
    differ = None
    if a.labels:
        differ = int((np.load(a.labels) != labels).sum())
    if a.save_labels:
        np.save(a.save_labels, labels)
    report = {
        "model": a.model, "threads": a.threads, "workers": a.workers or os.cpu_count(),
        "files": len(rows), "pixels": 28 * a.scale, "peak_rss_mb": parent_mb,
        "worker_peak_rss_mb": worker_mb, "labels_differing_from": a.labels, "differ": differ,
        "files_images_per_s": len(rows) / files_s, "files_seconds": files_s,
        "arrays_images_per_s": len(test.images) / arrays_s,
        "files_accuracy": float((labels == test.labels).mean() * 100),
        "arrays_accuracy": float((arrays.labels == test.labels).mean() * 100),
        "errors": sum(r.error is not None for r in rows),
    }  # fmt: skip
    print(
        f"{len(rows)} PNG files ({28 * a.scale}x{28 * a.scale}), {report['workers']} workers: "
        f"{report['files_images_per_s']:.0f} images/s end to end (accuracy "
        f"{report['files_accuracy']:.2f}%); bare predict on arrays "
        f"{report['arrays_images_per_s']:.0f} images/s; peak RSS {parent_mb:.0f} MB + "
        f"{worker_mb:.0f} MB a worker" + ("" if differ is None else f"; {differ} labels differ")
    )
    write_report(a.out, report)


if __name__ == "__main__":
    main()
