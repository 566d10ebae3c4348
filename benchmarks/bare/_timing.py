"""The command line of the bare scripts: load a model, time one batch size, print JSON. Warm-up
first, then single calls timed with time.perf_counter; the p50 and images/s. No mnist-edge code."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main(load) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seconds", type=float, default=2.0)
    a = p.parse_args()
    run = load(a.model, a.threads)
    x = np.random.default_rng(0).normal(size=(a.batch, 1, 28, 28)).astype(np.float32)
    for _ in range(10):
        run(x)
    times, deadline = [], time.perf_counter() + a.seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t0)
    p50 = float(np.median(times)) * 1e3
    print(
        json.dumps(
            {
                "model": a.model,
                "threads": a.threads,
                "batch": a.batch,
                "calls": len(times),
                "p50_ms": p50,
                "images_per_s": a.batch / p50 * 1e3,
            }
        )
    )
