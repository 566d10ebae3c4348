"""Does an INT8 model give the same answers on every CPU? One run, the same test digits, through:

- ONNX Runtime natively on this CPU (mnist-edge's session options);
- ONNX Runtime natively with `session.x64quantprecision = 1` (its exact path for u8 x s8 on x86
  without VNNI: what VNNI and ARM CPUs compute);
- onnx.reference.ReferenceEvaluator (the QDQ semantics in numpy, the arbiter);
- ONNX Runtime in this Python under `qemu-x86_64-static -cpu Haswell` (AVX2, no VNNI);
- onnxruntime-web in headless chromium (the page of `mnist-edge export --format web`).

For every pair: argmax agreement, max |logit difference|, and how many rows differ at all.
Then the INT8 files of the other runtimes (ExecuTorch's .int8.pte, LiteRT's .int8.tflite, made
from the packaged weights: _edge_models.py), each natively and under the emulated Haswell, in
the report's `edge_runtimes` (`--no-edge-runtimes` leaves them out).

    python benchmarks/int8_consistency.py [--int8 MODEL] [--fp32 MODEL] [--limit 10000]
        [--emulated-limit 10000] [--no-browser] [--out benchmarks/results/int8_consistency.json]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import print_table, write_report
from devtools import browser as driver
from devtools.emulate import qemu, run_emulated, run_model

from mnist_edge.edge import machine, web
from mnist_edge.edge.backends.onnxruntime import load_session, session_options
from mnist_edge.edge.data import batches, load_split
from mnist_edge.edge.files import sha256
from mnist_edge.edge.runtime import pretrained_path


def exact_x86(model: Path, x: np.ndarray) -> np.ndarray:
    opts = session_options(1)
    opts.add_session_config_entry("session.x64quantprecision", "1")
    session = load_session(model, options=opts)
    return np.concatenate([session.run(None, {"input": x[i : i + 500]})[0]
                           for i in range(0, len(x), 500)])  # fmt: skip


def reference(model: Path, x: np.ndarray) -> np.ndarray:
    import onnx
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(onnx.load(str(model)))
    return np.concatenate([evaluator.run(None, {"input": x[i : i + 500]})[0]
                           for i in range(0, len(x), 500)])  # fmt: skip


def browser(fp32: Path, int8: Path, x: np.ndarray) -> tuple[np.ndarray, str]:
    """The INT8 model's outputs in the page, and onnxruntime-web's version."""
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "web"
        result = web.export_web(web.WebConfig(str(fp32), str(site), str(int8)))
        if not result.local:
            raise SystemExit("onnxruntime-web is not installed locally: run `make web-deps`")
        server = web.make_server(site, port=0).start()
        try:
            with driver.chromium() as b, driver.open_page(server.url, b) as run:
                out = []
                for i in range(0, len(x), 250):
                    chunk = x[i : i + 250]
                    got = run.page.evaluate(
                        "async ([x, n]) => Array.from(await window.mnistEdge.run("
                        "Float32Array.from(x), n, 'int8'))",
                        [chunk.ravel().tolist(), len(chunk)],
                    )
                    out.append(np.asarray(got, np.float32).reshape(len(chunk), 10))
                assert run.errors() == [], run.errors()
        finally:
            server.stop()
    return np.concatenate(out), result.ort_version


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--int8", default=str(pretrained_path(int8=True)))
    p.add_argument("--fp32", default=str(pretrained_path()))
    p.add_argument("--limit", type=int, default=None, help="test digits (default: all 10,000)")
    p.add_argument("--emulated-limit", type=int, default=None, help="of those, under QEMU")
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--no-edge-runtimes", action="store_true")
    p.add_argument("--out", default="benchmarks/results/int8_consistency.json")
    a = p.parse_args()
    test = load_split("test", limit=a.limit)
    x = np.concatenate(list(batches(test.images, 500)))
    int8, fp32 = Path(a.int8), Path(a.fp32)
    here = machine.isa_class()
    runs: dict[str, tuple[np.ndarray, str]] = {}
    seconds: dict[str, float] = {}

    def timed(name: str, how: str, fn, *args) -> None:
        t0 = time.perf_counter()
        runs[name] = (fn(*args), how)
        seconds[name] = time.perf_counter() - t0
        print(f"{name}: {seconds[name]:.0f} s", flush=True)

    timed("fp32 native", here, run_model, fp32, x)
    timed("native", here, run_model, int8, x)
    timed("x64quantprecision", f"{here}, session.x64quantprecision=1", exact_x86, int8, x)
    timed("onnx.reference", "onnx.reference (numpy)", reference, int8, x)
    n_emulated = min(a.emulated_limit or len(x), len(x))
    if qemu():
        timed("emulated Haswell", "x86_64 avx2 (qemu -cpu Haswell)", run_emulated, int8,
              x[:n_emulated])  # fmt: skip
    if not a.no_browser:
        t0 = time.perf_counter()
        out, version = browser(fp32, int8, x)
        runs["browser"] = (out, f"wasm (onnxruntime-web {version}, chromium)")
        seconds["browser"] = time.perf_counter() - t0
        print(f"browser: {seconds['browser']:.0f} s", flush=True)

    accuracy = {k: float((v[:len(test.labels)].argmax(1) == test.labels[: len(v)]).mean() * 100)
                for k, (v, _) in runs.items()}  # fmt: skip
    pairs = []
    for (na, (ya, _)), (nb, (yb, _)) in itertools.combinations(runs.items(), 2):
        if na == "fp32 native" and nb != "native":
            continue  # fp32 is compared with the native INT8 only
        pairs.append(compare(na, ya, nb, yb))
    runs_out = {k: {"how": how, "accuracy": accuracy[k], "images": len(v), "seconds": seconds[k]}
                for k, (v, how) in runs.items()}  # fmt: skip
    edge = {} if a.no_edge_runtimes else edge_runtimes(x, n_emulated, test.labels)
    write_report(a.out, {
        "command": "python " + " ".join(sys.argv),
        "int8_model": str(int8), "int8_sha256": sha256(int8), "fp32_model": str(fp32),
        "images": len(x), "emulated_images": n_emulated, "measured_on": machine.measured_on(),
        "runs": runs_out, "pairs": pairs, "edge_runtimes": edge,
    })  # fmt: skip
    print(f"this CPU: {here}; {len(x)} test digits ({n_emulated} emulated)")
    print_table(["run", "how", "images", "accuracy %"],
                [[k, r["how"], str(r["images"]), f"{r['accuracy']:.2f}"]
                 for k, r in runs_out.items()])  # fmt: skip
    print_table(["a", "b", "images", "argmax agree %", "max |d|", "rows differing"],
                [[r["a"], r["b"], str(r["images"]), f"{r['argmax_agreement']:.2f}",
                  f"{r['max_abs_diff']:.3g}", str(r["rows_differing"])]
                 for r in pairs])  # fmt: skip


def edge_runtimes(x: np.ndarray, n_emulated: int, labels: np.ndarray) -> dict[str, object]:
    """Each other runtime's INT8 file natively and under the emulated Haswell."""
    from _edge_models import models_folder

    folder, out = models_folder(), {}
    for fmt in ("executorch-int8", "litert-int8"):
        path = folder.artifact(fmt)
        t0 = time.perf_counter()
        here = run_model(path, x)
        there = run_emulated(path, x[:n_emulated]) if qemu() else None
        row = {"file": path.name, "sha256": sha256(path),
               "accuracy_native": float((here.argmax(1) == labels).mean() * 100),
               "seconds": time.perf_counter() - t0}  # fmt: skip
        if there is not None:
            row["emulated_haswell"] = compare("native", here, "emulated Haswell", there)
            row["accuracy_emulated"] = float((there.argmax(1) == labels[:n_emulated]).mean() * 100)
        out[fmt] = row
        print(f"{fmt}: native and emulated {row['seconds']:.0f} s", flush=True)
    print_table(["INT8 file", "images compared", "argmax agree %", "max |d|", "rows differing"],
                [[r["file"], str(r["emulated_haswell"]["images"]),
                  f"{r['emulated_haswell']['argmax_agreement']:.2f}",
                  f"{r['emulated_haswell']['max_abs_diff']:.3g}",
                  str(r["emulated_haswell"]["rows_differing"])]
                 for r in out.values() if "emulated_haswell" in r])  # fmt: skip
    return out


def compare(na: str, ya: np.ndarray, nb: str, yb: np.ndarray) -> dict[str, object]:
    """Two runs on their common images: argmax agreement, max |difference|, rows that differ."""
    n = min(len(ya), len(yb))
    d = np.abs(ya[:n] - yb[:n])
    agree = float((ya[:n].argmax(1) == yb[:n].argmax(1)).mean() * 100)
    differing = int((d.max(1) > 1e-5).sum())
    return {"a": na, "b": nb, "images": n, "argmax_agreement": agree,
            "max_abs_diff": float(d.max()), "rows_differing": differing}  # fmt: skip


if __name__ == "__main__":
    main()
