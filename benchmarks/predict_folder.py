"""Images/s of `mnist-edge predict FOLDER`: decode + preprocess + inference, end to end.

Writes the first `--limit` official test digits as PNG files (dark ink on white, 28x28, as a
scan would come; `--scale 3` makes them 84x84), then times, in this order: `prepare_image` alone
on every file in this process (one core: BLAS capped to one thread before numpy loads); the
library call the CLI makes (predict_paths over the folder, rows to a CSV file), with the cores
split between the engine and the worker processes by threads.for_files unless --threads /
--workers say otherwise; and the bare Predictor.predict on the same digits as uint8 arrays
(every core). Peak RSS of this process and of its largest worker.
Writes benchmarks/results/predict_folder.json.

    python benchmarks/predict_folder.py --model exports/mnist_cnn.onnx [--scale 3]
        [--limit 3000] [--threads N] [--workers N] [--labels FILE.npy]
        (--labels: compare the answers with a saved run)
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # prepare_image "on one core", as workers run
import resource  # noqa: E402
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402
from _report import write_report  # noqa: E402
from PIL import Image  # noqa: E402

from mnist_edge.edge.data import load_split  # noqa: E402
from mnist_edge.edge.images import prepare_image  # noqa: E402
from mnist_edge.edge.machine import peak_rss_mb, reset_peak_rss  # noqa: E402
from mnist_edge.edge.predict import PredictConfig, expand_inputs, predict_paths  # noqa: E402
from mnist_edge.edge.runtime import Predictor  # noqa: E402
from mnist_edge.edge.threads import cores  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="exports/mnist_cnn.onnx")
    p.add_argument("--threads", type=int, default=None, help="default: threads.for_files")
    p.add_argument("--scale", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="the first N test digits (all)")
    p.add_argument("--workers", type=int, default=None, help="default: threads.for_files")
    p.add_argument("--labels", help="a .npy of an earlier run's labels: say how many differ")
    p.add_argument("--save-labels", help="write this run's labels here (.npy)")
    p.add_argument("--out", default="benchmarks/results/predict_folder.json")
    a = p.parse_args()
    test = load_split("test", limit=a.limit)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "digits"
        folder.mkdir()
        for i, digit in enumerate(test.images):
            im = Image.fromarray(255 - digit)
            if a.scale > 1:
                im = im.resize((28 * a.scale,) * 2, Image.BILINEAR)
            im.save(folder / f"{i:05d}.png")
        paths = expand_inputs([folder])
        for path in paths[:50]:
            prepare_image(path)  # warm: Pillow's plugins, the caches of grids
        t0 = time.perf_counter()
        for path in paths:
            prepare_image(path)
        prepare_ms = (time.perf_counter() - t0) / len(paths) * 1e3
        reset_peak_rss()
        cfg = PredictConfig(a.model, threads=a.threads, workers=a.workers,
                            output=str(Path(tmp) / "rows.csv"))  # fmt: skip
        t0 = time.perf_counter()
        summary = predict_paths([str(folder)], cfg)
        files_s = time.perf_counter() - t0
        rows = summary.rows
        parent_mb = peak_rss_mb()
        worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    labels = np.array([r.label for r in rows])
    predictor = Predictor(a.model)  # every core: the bare engine's best
    predictor.predict(test.images[:256])
    t0 = time.perf_counter()
    arrays = predictor.predict(test.images)
    arrays_s = time.perf_counter() - t0
    differ = None
    if a.labels:
        differ = int((np.load(a.labels) != labels).sum())
    if a.save_labels:
        np.save(a.save_labels, labels)
    report = {
        "model": a.model, "cores": cores(), "threads": summary.threads,
        "workers": summary.workers, "prepare_ms_per_file_one_core": prepare_ms,
        "files": len(rows), "pixels": 28 * a.scale, "peak_rss_mb": parent_mb,
        "worker_peak_rss_mb": worker_mb, "labels_differing_from": a.labels, "differ": differ,
        "files_images_per_s": len(rows) / files_s, "files_seconds": files_s,
        "arrays_images_per_s": len(test.images) / arrays_s,
        "files_vs_arrays": (len(rows) / files_s) / (len(test.images) / arrays_s),
        "files_accuracy": float((labels == test.labels).mean() * 100),
        "arrays_accuracy": float((arrays.labels == test.labels).mean() * 100),
        "errors": sum(r.error is not None for r in rows),
    }  # fmt: skip
    print(
        f"{len(rows)} PNG files ({28 * a.scale}x{28 * a.scale}): prepare_image "
        f"{prepare_ms:.3f} ms a file on one core; predict FOLDER with {summary.workers} workers "
        f"and {summary.threads} engine threads {report['files_images_per_s']:.0f} images/s "
        f"(accuracy {report['files_accuracy']:.2f}%); bare predict on arrays "
        f"{report['arrays_images_per_s']:.0f} images/s ({report['files_vs_arrays']:.2f}x); "
        f"peak RSS {parent_mb:.0f} MB + {worker_mb:.0f} MB a worker"
        + ("" if differ is None else f"; {differ} labels differ")
    )
    write_report(a.out, report)


if __name__ == "__main__":
    main()
