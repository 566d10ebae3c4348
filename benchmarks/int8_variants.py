"""INT8 variants against fp32 in one run: size, accuracy on 10,000 test images, latency.

Also probes the raw int8/fp32 GEMM ratio of ONNX Runtime on conv3's im2col shape
(484 x 576 x 128), which bounds what any int8 model can gain on this CPU.

    python benchmarks/int8_variants.py --model exports/mnist_cnn.onnx [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from _report import print_table, write_report
from onnx import TensorProto, helper, numpy_helper

from mnist_edge.edge.backends.onnxruntime import session_options
from mnist_edge.edge.data import batches, load_split
from mnist_edge.edge.runners import load_runner, outputs
from mnist_edge.edge.timing import interleaved
from mnist_edge.quantize import QuantConfig, calibration_images, quantize_model

VARIANTS = {  # changes against QuantConfig's defaults (per-channel u8s8, 7-bit weights, MinMax)
    "qdq per-channel u8s8 reduce_range (default)": {},
    "qdq per-channel u8s8 full range": {"reduce_range": False},
    "qdq per-tensor u8s8 reduce_range": {"per_channel": False},
    "qdq per-channel s8s8 minmax": {"activation_type": "int8"},
    "qdq per-channel u8u8 minmax": {"weight_type": "uint8"},
    "qdq per-channel u8s8 entropy": {"calibration_method": "entropy"},
    "qdq per-channel u8s8 percentile": {"calibration_method": "percentile"},
    "qoperator per-channel u8s8 minmax": {"quant_format": "qoperator"},
    "qoperator per-tensor u8s8 minmax": {"quant_format": "qoperator", "per_channel": False},
}


def gemm_models(tmp: Path, m: int = 484, k: int = 576, n: int = 128) -> dict[str, Path]:
    """fp32 MatMul, and MatMulInteger u8 x s8 / u8 x u8, with constant weights."""
    rng = np.random.default_rng(0)
    out = {}
    for name, a_type, w in (
        ("fp32", TensorProto.FLOAT, rng.standard_normal((k, n)).astype(np.float32)),
        ("u8s8", TensorProto.UINT8, rng.integers(-128, 128, (k, n)).astype(np.int8)),
        ("u8u8", TensorProto.UINT8, rng.integers(0, 256, (k, n)).astype(np.uint8)),
    ):
        op = "MatMul" if name == "fp32" else "MatMulInteger"
        out_type = TensorProto.FLOAT if name == "fp32" else TensorProto.INT32
        graph = helper.make_graph(
            [helper.make_node(op, ["a", "w"], ["y"])],
            name,
            [helper.make_tensor_value_info("a", a_type, [m, k])],
            [helper.make_tensor_value_info("y", out_type, [m, n])],
            [numpy_helper.from_array(w, "w")],
        )
        path = tmp / f"gemm_{name}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        out[name] = path
    return out


def alternate(fns: dict[str, tuple], rounds: int) -> dict[str, float]:
    """p50 seconds of each (callable, arg), calls interleaved round-robin."""
    return {k: float(np.median(v)) for k, v in interleaved(fns, rounds).items()}


def runner(path: Path | str, threads: int):
    s = ort.InferenceSession(
        str(path), session_options(threads), providers=["CPUExecutionProvider"]
    )
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: x})


def test_predictions(model: Path | str, images: np.ndarray) -> np.ndarray:
    """The model's answers on the test images, in ONNX Runtime."""
    return outputs(load_runner(model), images).argmax(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="exports/mnist_cnn.onnx")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--out", default="benchmarks/results/int8_variants.json")
    a = p.parse_args()
    test = load_split("test")
    fp32_pred = test_predictions(a.model, test.images)
    fp32_acc = float((fp32_pred == test.labels).mean() * 100)
    base = QuantConfig(model=a.model)
    calib = calibration_images(base, load_split("train"))
    x1, x64 = next(batches(test.images[:1], 1)), next(batches(test.images[:64], 64))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gemm = {k: runner(v, a.threads) for k, v in gemm_models(tmp).items()}
        rng = np.random.default_rng(1)
        a_f = rng.standard_normal((484, 576)).astype(np.float32)
        a_u = rng.integers(0, 256, (484, 576)).astype(np.uint8)
        g = alternate({"fp32": (gemm["fp32"], a_f), "u8s8": (gemm["u8s8"], a_u),
                       "u8u8": (gemm["u8u8"], a_u)}, a.rounds)  # fmt: skip
        gemm_ratio = {k: g["fp32"] / g[k] for k in ("u8s8", "u8u8")}
        fp32_run = runner(a.model, a.threads)
        for name, change in VARIANTS.items():
            cfg = replace(base, output=str(tmp / f"{len(rows)}.onnx"), **change)
            path = quantize_model(cfg, calib)
            pred = test_predictions(path, test.images)
            run = runner(path, a.threads)
            t1 = alternate({"fp32": (fp32_run, x1), "int8": (run, x1)}, a.rounds)
            t64 = alternate({"fp32": (fp32_run, x64), "int8": (run, x64)}, max(10, a.rounds // 10))
            acc = float((pred == test.labels).mean() * 100)
            rows.append({
                "variant": name, "settings": cfg.settings(), "bytes": path.stat().st_size,
                "size_ratio": path.stat().st_size / Path(a.model).stat().st_size,
                "accuracy": acc, "accuracy_drop": fp32_acc - acc,
                "argmax_agreement": float((pred == fp32_pred).mean() * 100),
                "b1_fp32_ms": t1["fp32"] * 1e3, "b1_int8_ms": t1["int8"] * 1e3,
                "b1_speedup": t1["fp32"] / t1["int8"],
                "b64_fp32_ms": t64["fp32"] * 1e3, "b64_int8_ms": t64["int8"] * 1e3,
                "b64_speedup": t64["fp32"] / t64["int8"],
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    write_report(a.out, {"fp32_accuracy": fp32_acc, "gemm_speedup": gemm_ratio,
                         "gemm_p50_ms": {k: v * 1e3 for k, v in g.items()},
                         "threads": a.threads, "rows": rows})  # fmt: skip
    print(
        f"raw GEMM int8/fp32 speed-up: u8s8 {gemm_ratio['u8s8']:.2f}x, "
        f"u8u8 {gemm_ratio['u8u8']:.2f}x; fp32 accuracy {fp32_acc:.2f}%"
    )
    print_table(
        ["variant", "size", "accuracy", "drop (pp)", "agree %", "b1 speed-up", "b64 speed-up"],
        [[r["variant"], f"{r['size_ratio']:.2f}x", f"{r['accuracy']:.2f}",
          f"{r['accuracy_drop']:+.2f}", f"{r['argmax_agreement']:.2f}",
          f"{r['b1_speedup']:.2f}x", f"{r['b64_speedup']:.2f}x"] for r in rows],
    )  # fmt: skip


if __name__ == "__main__":
    main()
