"""Trainer overhead: `train()`'s images/s against a bare forward/backward/step loop.

Both run the same model init, the same shuffled batches and Adam, in the same process,
alternating ROUNDS times; the ratio of medians is reported (target >= 0.95).

    python benchmarks/trainer_overhead.py [--limit 4096] [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from _report import write_report

from mnist_edge.edge.data import load_split
from mnist_edge.model import MnistCNN
from mnist_edge.train import TrainConfig, to_tensor, train


def bare_loop(x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> float:
    """images/s of the minimal loop over the batches train() would use in epoch 0."""
    torch.manual_seed(cfg.seed)
    model = MnistCNN()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(cfg.seed * 1_000_003))
    model.train()
    t0 = time.perf_counter()
    for i in range(0, len(y), cfg.batch_size):
        idx = perm[i : i + cfg.batch_size]
        opt.zero_grad(set_to_none=True)
        F.nll_loss(model(x[idx]), y[idx]).backward()
        opt.step()
    return len(y) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="benchmarks/results/trainer_overhead.json")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    x, y = to_tensor(load_split("train", limit=a.limit))
    trainer, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            epochs=1, limit=a.limit, test_limit=100, output_dir=tmp, threads=a.threads
        )
        for _ in range(a.rounds):
            bare.append(bare_loop(x, y, cfg))
            trainer.append(train(cfg).history[-1].images_per_s)
    ratio = statistics.median(trainer) / statistics.median(bare)
    report = {
        "trainer_images_per_s": trainer,
        "bare_loop_images_per_s": bare,
        "ratio_of_medians": ratio,
        "target": 0.95,
        "limit": a.limit,
        "threads": torch.get_num_threads(),
    }
    write_report(a.out, report)
    print(f"trainer {statistics.median(trainer):.0f} img/s, bare loop "
          f"{statistics.median(bare):.0f} img/s, ratio {ratio:.3f} -> {a.out}")  # fmt: skip


if __name__ == "__main__":
    main()
