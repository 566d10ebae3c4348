"""`mnist-edge serve --workers N`: requests/s at concurrency 64 with 1 and 2 worker processes
(REST binary, REST JSON, gRPC), each the median of --repeats runs, hey and h2load on the same
cores as the server, and the expected throughput at 8 and 16 cores worked out on paper.

The paper figure: with W workers on W cores, each worker (its event loop, its batcher, one
engine thread) served rps(W) / W requests/s here; at N cores, N workers of one thread each
would serve N times that, unless the engine is the limit first: N times the bare batch-64
throughput of one engine thread. Both are given. The load generator takes a share of these
cores here, so the measured per-worker figure underestimates a worker on a core of its own.

    python benchmarks/serve_workers.py [--workers 1,2] [--seconds 5] [--repeats 2]

Writes benchmarks/results/serve_workers.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _report import print_table, write_report
from serve import Server, bodies, drive, summary

from mnist_edge.edge import machine
from mnist_edge.edge.data import batches, load_split
from mnist_edge.edge.runtime import Predictor, pretrained_path
from mnist_edge.edge.threads import cores
from mnist_edge.edge.timing import time_calls

PAPER_CORES = (8, 16)


def bare_per_thread(model: Path) -> float:
    """Batch-64 images/s of one engine thread, as tune measures it."""
    p = Predictor(model, threads=1)
    many = next(batches(load_split("test", limit=64).images, 64))
    return 64 / (time_calls(p.run, many, duration=2.0, warmup=5).p50_ms / 1e3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="1,2")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--out", default="benchmarks/results/serve_workers.json")
    a = p.parse_args()
    counts = [int(w) for w in a.workers.split(",")]
    model = pretrained_path()
    per_thread = bare_per_thread(model)
    cells, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reqs = bodies(tmp)
        for w in counts:
            server = Server(["--model", str(model), "--workers", str(w)], tmp)
            try:
                for encoding, (body, headers) in reqs.items():
                    drive(server, encoding, body, headers, a.concurrency, 1.0)  # warm each worker
                    runs = [drive(server, encoding, body, headers, a.concurrency, a.seconds)
                            for _ in range(a.repeats)]  # fmt: skip
                    cell = {"workers": w, "encoding": encoding, "concurrency": a.concurrency,
                            **summary(runs)}  # fmt: skip
                    cells.append(cell)
                    rows.append([str(w), encoding, f"{cell['rps']:.0f}", f"{cell['p50_ms']:.2f}",
                                 f"{cell['p99_ms']:.2f}", str(cell["not_200"])])  # fmt: skip
                    time.sleep(0.5)
            finally:
                server.stop()
    print_table(["workers", "encoding", "requests/s", "p50 ms", "p99 ms", "not 200"], rows)
    here = cores()
    top = max(counts)
    paper = {}
    for encoding in reqs:
        by = {c["workers"]: c["rps"] for c in cells if c["encoding"] == encoding}
        per_worker = by[top] / top
        paper[encoding] = {
            "per_worker_rps": per_worker,
            "scaling_vs_1_worker": by[top] / by[1] if 1 in by else None,
            **{f"expected_{n}_cores": min(n * per_worker, n * per_thread) for n in PAPER_CORES},
            **{f"engine_limit_{n}_cores": n * per_thread for n in PAPER_CORES},
        }  # fmt: skip
        print(f"{encoding}: {per_worker:.0f} requests/s per worker; expected "
              + ", ".join(f"{n} cores {paper[encoding][f'expected_{n}_cores']:,.0f}"
                          for n in PAPER_CORES))  # fmt: skip
    print(f"bare batch-64 on one engine thread: {per_thread:,.0f} images/s")
    write_report(a.out, {"command": "python " + " ".join(sys.argv),
                         "measured_on": machine.measured_on(), "cores": here,
                         "seconds": a.seconds, "repeats": a.repeats, "cells": cells,
                         "bare_b64_one_thread_images_per_s": per_thread,
                         "paper": paper})  # fmt: skip


if __name__ == "__main__":
    main()
