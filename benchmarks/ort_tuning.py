"""ONNX Runtime session settings for this model, measured side by side in one run.

Variants run in blocks (warm-up, then BLOCK timed calls), cycling through all variants ROUNDS
times, so that load drift hits all alike. Blocks rather than single interleaved calls: with 2+
threads, one session's spinning pool threads would otherwise steal the cores of the next call.
Reports p50 per variant at batch 1 and 64, with 1 and all threads, against PyTorch eager.

    python benchmarks/ort_tuning.py --model exports/mnist_cnn.onnx --checkpoint exports/mnist_cnn.pt
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import onnxruntime as ort
import torch
from _report import print_table, write_report

from mnist_edge.checkpoint import load_model
from mnist_edge.edge.backends.onnxruntime import session_options
from mnist_edge.edge.bench import FLOPS_PER_IMAGE, interleaved, matmul_gflops
from mnist_edge.edge.data import batches, load_split

ROUNDS = 3  # passes over all variants


def variants(model: str, threads: int) -> dict[str, object]:
    """name -> callable(x) for each session setting under test."""
    out = {}

    def session(opts: ort.SessionOptions) -> ort.InferenceSession:
        return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])

    plain = ort.SessionOptions()
    plain.intra_op_num_threads = threads
    s = session(plain)
    out["ort defaults (threads set)"] = lambda x, s=s: s.run(None, {"input": x})
    s = session(session_options(threads))
    out["mnist-edge options"] = lambda x, s=s: s.run(None, {"input": x})
    opts = session_options(threads)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = session(opts)
    out["spinning off"] = lambda x, s=s: s.run(None, {"input": x})
    opts = session_options(threads)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    s = session(opts)
    out["graph opt basic"] = lambda x, s=s: s.run(None, {"input": x})
    opts = session_options(threads)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = session(opts)
    out["graph opt off"] = lambda x, s=s: s.run(None, {"input": x})
    s = session(session_options(threads))

    def io_bound(x: np.ndarray, s=s) -> None:
        binding = s.io_binding()
        binding.bind_cpu_input("input", x)
        binding.bind_output("log_probs")
        s.run_with_iobinding(binding)
        binding.copy_outputs_to_cpu()

    out["io binding"] = io_bound
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="exports/mnist_cnn.onnx")
    p.add_argument("--checkpoint", default="exports/mnist_cnn.pt")
    p.add_argument("--rounds", type=int, default=300, help="timed calls per variant at batch 1")
    p.add_argument("--out", default="benchmarks/results/ort_tuning.json")
    a = p.parse_args()
    pixels = load_split("test", limit=64).images
    model, _ = load_model(a.checkpoint)
    rows = []
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        rate = matmul_gflops(threads)
        fns = variants(a.model, threads)

        def eager(x: np.ndarray) -> None:
            with torch.inference_mode():
                model(torch.from_numpy(x))

        fns["pytorch eager"] = eager
        for b in (1, 64):
            x = next(batches(pixels[:b], b))
            rounds = a.rounds if b == 1 else max(10, a.rounds // 16)
            times: dict[str, list[float]] = {k: [] for k in fns}
            for _ in range(ROUNDS):
                for name, fn in fns.items():
                    times[name] += interleaved({name: (fn, x)}, rounds // ROUNDS, warmup=5)[name]
            eager_p50 = float(np.median(times["pytorch eager"]))
            for name, ts in times.items():
                p50 = float(np.median(ts))
                rows.append({
                    "variant": name, "threads": threads, "batch_size": b, "p50_ms": p50 * 1e3,
                    "p99_ms": float(np.percentile(ts, 99)) * 1e3, "throughput": b / p50,
                    "p50_vs_eager": p50 / eager_p50, "matmul_gflops": rate,
                    "roofline_fraction": FLOPS_PER_IMAGE * b / p50 / 1e9 / rate,
                })  # fmt: skip
    write_report(a.out, {"rows": rows})
    print_table(
        ["variant", "threads", "batch", "p50 ms", "p99 ms", "img/s", "vs eager", "roofline"],
        [[r["variant"], str(r["threads"]), str(r["batch_size"]), f"{r['p50_ms']:.3f}",
          f"{r['p99_ms']:.3f}", f"{r['throughput']:.0f}", f"{r['p50_vs_eager']:.2f}",
          f"{r['roofline_fraction']:.0%}"] for r in rows],
    )  # fmt: skip


if __name__ == "__main__":
    main()
