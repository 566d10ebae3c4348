"""Every edge runtime side by side, each runner against its bare runtime, in one run.

For ONNX Runtime, ExecuTorch and LiteRT, fp32 and INT8 (the packaged model's weights:
_edge_models.py), at 1 and 2 threads, batch 1 and 64: mnist-edge's runner (load_runner, input
checks included) and the runtime called bare (benchmarks/bare/, no mnist-edge code), both loaded
in the same process, are timed in alternating blocks of `--block` seconds until each has run
`--seconds`; a figure is the median of all its calls (`blocks` says why blocks). The runner
must be within 5% of its bare runtime (ratio <= 1.05). Then `tune` at each thread budget over
every installed case (OpenVINO too), on the deployment rule's 2,000 test digits: what it picks.

    python benchmarks/runtimes.py [--seconds 3] [--block 0.1]
        [--out benchmarks/results/runtimes.json]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
from _edge_models import models_folder
from _report import print_table, write_report

from mnist_edge.edge import machine
from mnist_edge.edge.data import batches, load_split
from mnist_edge.edge.runners import load_runner

BARE = Path(__file__).resolve().parent / "bare"
RUNTIMES = {"onnxruntime": ("onnx", "onnx-int8"), "executorch": ("executorch", "executorch-int8"),
            "litert": ("litert", "litert-int8")}  # fmt: skip
LIMIT = 1.05  # runner p50 / bare p50


def bare(runtime: str):
    """benchmarks/bare/<runtime>_bare.py's load(), imported by path (it has no mnist-edge code)."""
    sys.path.insert(0, str(BARE))
    spec = importlib.util.spec_from_file_location(f"{runtime}_bare", BARE / f"{runtime}_bare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load


def blocks(fns: dict, total: float, block: float) -> dict[str, list[float]]:
    """Per-call times (s) of several loaded callables, run in alternating blocks of `block`
    seconds until each has run `total` seconds. Blocks, not single calls: ONNX Runtime's idle
    threads spin for a while after a call, and with two sessions taking turns call by call one
    session's spinning threads take the core the other's need (onnxruntime #3099); short
    blocks still share the machine's drift between the two."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn, x in fns.values():
        for _ in range(5):  # warm-up
            fn(x)
    spent = 0.0
    while spent < total:
        for k, (fn, x) in fns.items():
            deadline = time.perf_counter() + block
            fn(x)  # the first call of a block may meet the other one's spinning threads
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                fn(x)
                times[k].append(time.perf_counter() - t0)
        spent += block
    return times


def measure(folder, seconds: float, block: float, images: np.ndarray) -> list[dict]:
    rows = []
    for threads in (1, 2):
        for runtime, formats in RUNTIMES.items():
            load_bare = bare(runtime)
            for fmt, precision in zip(formats, ("fp32", "int8"), strict=True):
                path = folder.artifact(fmt)
                runner, raw = load_runner(path, threads=threads), load_bare(str(path), threads)
                for b in (1, 64):
                    x = next(batches(images[:b], b))
                    np.testing.assert_allclose(runner(x), raw(x), rtol=1e-5, atol=1e-5)
                    times = blocks({"runner": (runner, x), "bare": (raw, x)}, seconds, block)
                    r, w = (float(np.median(times[k])) * 1e3 for k in ("runner", "bare"))
                    rows.append({"runtime": runtime, "precision": precision, "threads": threads,
                                 "batch": b, "runner_p50_ms": r, "bare_p50_ms": w,
                                 "ratio": r / w, "runner_images_per_s": b / r * 1e3,
                                 "bare_images_per_s": b / w * 1e3, "within_limit": r / w <= LIMIT,
                                 "calls": {k: len(v) for k, v in times.items()}})  # fmt: skip
                    print(f"{runtime} {precision} {threads}t b{b}: runner {r:.3f} ms, bare "
                          f"{w:.3f} ms ({r / w:.3f}x)", flush=True)  # fmt: skip
                del runner, raw
                gc.collect()
    return rows


def tune_picks(folder, duration: float) -> dict[str, dict]:
    from mnist_edge.edge.tune import TuneConfig, tune

    test = load_split("test")
    picks = {}
    for threads in (1, 2):
        report = tune(TuneConfig(str(folder.onnx), threads=(threads,), duration=duration,
                                 profile=str(folder.root / f"deploy.{threads}.json")),
                      test)  # fmt: skip
        ranked = [{k: t.to_dict()[k] for k in ("name", "precision", "passed", "p50_ms",
                                                "images_per_s", "argmax_agreement", "accuracy")}
                  for t in report.ranked()]  # fmt: skip
        best = report.best
        picks[str(threads)] = {"best": best and best.case.name, "best_p50_ms": best and best.p50_ms,
                               "ranked": ranked, "skipped": report.skipped}  # fmt: skip
        print(f"tune --threads {threads}: {best and best.case.name}", flush=True)
    return picks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0, help="each, per case")
    p.add_argument("--block", type=float, default=0.1, help="seconds a turn")
    p.add_argument("--tune-duration", type=float, default=1.0)
    p.add_argument("--out", default="benchmarks/results/runtimes.json")
    a = p.parse_args()
    folder = models_folder()
    images = load_split("test", limit=64).images
    rows = measure(folder, a.seconds, a.block, images)
    picks = tune_picks(folder, a.tune_duration)
    from mnist_edge.edge.files import sha256

    write_report(a.out, {
        "command": "python " + " ".join(sys.argv), "measured_on": machine.measured_on(),
        "seconds_each": a.seconds, "block_seconds": a.block, "limit_ratio": LIMIT,
        "models": {f: {"file": folder.artifact(f).name, "bytes": folder.artifact(f).stat().st_size,
                       "sha256": sha256(folder.artifact(f))} for f in
                   ("onnx", "onnx-int8", "executorch", "executorch-int8", "litert",
                    "litert-int8")},
        "rows": rows, "tune": picks,
    })  # fmt: skip
    print_table(["runtime", "precision", "threads", "batch", "runner", "bare", "ratio", "img/s"],
                [[r["runtime"], r["precision"], str(r["threads"]), str(r["batch"]),
                  f"{r['runner_p50_ms']:.3f} ms", f"{r['bare_p50_ms']:.3f} ms",
                  f"{r['ratio']:.3f}", f"{r['runner_images_per_s']:,.0f}"]
                 for r in rows])  # fmt: skip
    print_table(
        ["threads", "tune picks", "p50 ms"],
        [[t, str(v["best"]), f"{v['best_p50_ms']:.3f}"] for t, v in picks.items()],
    )
    over = [r for r in rows if not r["within_limit"]]
    if over:
        print(f"{len(over)} runner(s) more than 5% behind their bare runtime")


if __name__ == "__main__":
    main()
