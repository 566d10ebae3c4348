"""The full training run: 10 epochs, batch 64, learning rate 1e-3, all 60,000 images.

Writes test accuracy per epoch, wall time and images/s, with the machine and versions, to
benchmarks/results/train_full.json. Extra flags (e.g. --lr-schedule cosine --augment --low-res
0.2, the default recipe) pass through to the trainer's config. Takes an hour or more on 2 cores.

    python benchmarks/train_full.py [--lr-schedule cosine] [--augment] [--low-res P] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

from _report import write_report

from mnist_edge.train import TrainConfig, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"])
    p.add_argument("--augment", action="store_true")
    p.add_argument("--low-res", type=float, default=0.0, help="The default recipe's is 0.2.")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--output-dir", default="exports/train_full")
    p.add_argument("--out", default="benchmarks/results/train_full.json")
    a = p.parse_args()
    cfg = TrainConfig(
        epochs=a.epochs,
        lr_schedule=a.lr_schedule,
        augment=a.augment,
        low_res=a.low_res,
        weight_decay=a.weight_decay,
        threads=a.threads,
        data_dir=a.data_dir,
        output_dir=a.output_dir,
    )
    t0 = time.perf_counter()

    def log(m):  # progress to stdout, so a background run can be followed
        print(json.dumps(asdict(m)), flush=True)

    result = train(cfg, on_epoch=log)
    wall = time.perf_counter() - t0
    report = {
        "config": asdict(result.config),
        "epochs": [asdict(m) for m in result.history],
        "final_test_accuracy": result.test_accuracy,
        "best_test_accuracy": max(m.test_accuracy for m in result.history),
        "wall_seconds": wall,
        "mean_train_images_per_s": sum(m.images_per_s for m in result.history)
        / len(result.history),
        "checkpoint": str(result.checkpoint),
    }
    out = write_report(a.out, report)
    print(f"final test accuracy {result.test_accuracy:.2f}% in {wall / 60:.1f} min -> {out}")


if __name__ == "__main__":
    main()
