"""Training throughput: 2 processes x 1 thread (torchrun, gloo) against 1 process x 2 threads.

Both train one epoch with the same flags, one after the other in the same run; images/s comes
from each run's checkpoint metrics (training part of the epoch only), accuracy from its test
evaluation.

    python benchmarks/ddp_throughput.py [--limit N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _report import write_report


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=None, help="training images (default: all)")
    p.add_argument("--out", default="benchmarks/results/ddp_throughput.json")
    a = p.parse_args()
    common = ["train", "--epochs", "1", "--device", "cpu"]
    if a.limit:
        common += ["--limit", str(a.limit)]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        py = sys.executable
        launch = [py, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        setups = {
            "1 process x 2 threads": [py, "-m", "mnist_edge", *common, "--threads", "2"],
            "2 processes x 1 thread": [*launch, "-m", "mnist_edge", *common, "--threads", "1"],
        }
        for name, cmd in setups.items():
            out = Path(tmp) / name.replace(" ", "_")
            wall = run([*cmd, "--output-dir", str(out)])
            ck = torch.load(out / "mnist_cnn.pt", weights_only=True)
            m = ck["metrics"][-1]
            rows[name] = {"images_per_s": m["images_per_s"], "train_seconds": m["seconds"],
                          "wall_seconds": wall, "test_accuracy": m["test_accuracy"],
                          "command": " ".join(cmd[1:])}  # fmt: skip
            print(name, json.dumps(rows[name]), flush=True)
    ratio = (
        rows["2 processes x 1 thread"]["images_per_s"]
        / rows["1 process x 2 threads"]["images_per_s"]
    )
    write_report(a.out, {"rows": rows, "ddp_over_threads_throughput": ratio, "limit": a.limit})
    print(f"2x1 / 1x2 images/s ratio: {ratio:.2f} -> {a.out}")


if __name__ == "__main__":
    main()
