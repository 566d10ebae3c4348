"""Peak memory and speed of Predictor.predict on the whole test set, by max_batch.

Each setting runs in a fresh process (peak RSS is per process): load the model, then predict all
10,000 official test images (uint8) in one call. max_batch=10000 is the old behaviour (the whole
batch to ONNX Runtime at once). Writes benchmarks/results/predict_memory.json.

    python benchmarks/predict_memory.py --model exports/mnist_cnn.onnx [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _report import write_report

CHILD = """
import json, sys, time
import numpy as np
from mnist_edge.edge.data import load_split
from mnist_edge.edge.machine import peak_rss_mb
from mnist_edge.edge.runtime import Predictor
model = sys.argv[1]
threads, max_batch, repeats = (int(v) for v in sys.argv[2:5])
images = load_split("test").images
base = peak_rss_mb()
p = Predictor(model, threads=threads, max_batch=max_batch)
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    labels = p.predict(images).labels
    times.append(time.perf_counter() - t0)
print(json.dumps({"max_batch": max_batch, "peak_rss_mb": peak_rss_mb(), "rss_before_model_mb": base,
                  "seconds": min(times), "images_per_s": len(images) / min(times),
                  "labels_sha": hash(labels.tobytes())}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="exports/mnist_cnn.onnx")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", default="10000,1024,512,256,128,64")
    p.add_argument("--out", default="benchmarks/results/predict_memory.json")
    a = p.parse_args()
    rows = []
    for size in (int(s) for s in a.sizes.split(",")):
        cmd = [sys.executable, "-c", CHILD, a.model, str(a.threads), str(size), str(a.repeats)]
        row = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        rows.append(row)
        print(f"max_batch {size:>6}: peak RSS {row['peak_rss_mb']:7.0f} MB, "
              f"{row['images_per_s']:6.0f} images/s", flush=True)  # fmt: skip
    same = len({r.pop("labels_sha") for r in rows}) == 1
    write_report(a.out, {"model": a.model, "threads": a.threads, "images": 10_000, "rows": rows,
                         "same_labels_for_every_setting": same})  # fmt: skip


if __name__ == "__main__":
    main()
