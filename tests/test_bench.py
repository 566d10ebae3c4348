import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_clean_error, cli

from mnist_edge.edge import bench, timing
from mnist_edge.edge.errors import ConfigError

CASE_KEYS = {"backend", "batch_size", "threads", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms",
             "min_ms", "iterations", "throughput", "load_ms", "first_inference_ms",
             "cold_start_ms", "gflops", "roofline_fraction", "p50_vs_eager",
             "peak_rss_mb"}  # fmt: skip


def test_flops_match_the_model_definition():
    """spec's count against the multiply-adds of the layers torch actually builds."""
    import torch

    from mnist_edge.edge import spec
    from mnist_edge.model import MnistCNN

    macs = []

    def count(module, _inputs, out):
        per_output = module.weight[0].numel()  # in_channels x k x k, or in_features
        macs.append(out[0].numel() * per_output)

    model = MnistCNN()
    for layer in (model.conv1, model.conv2, model.conv3, model.fc):
        layer.register_forward_hook(count)
    model(torch.zeros(1, 1, 28, 28))
    assert sum(macs) == spec.macs_per_image() == 194_688 + 10_616_832 + 35_684_352 + 619_520
    assert bench.FLOPS_PER_IMAGE == 2 * sum(macs)


def test_roofline_model_is_a_plain_matmul():
    """The embedded MatMul bytes are what onnx.helper builds, and ONNX Runtime computes A @ B."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, d)
          for n, d in (("a", ["m", "k"]), ("b", ["k", "n"]), ("c", ["m", "n"]))]  # fmt: skip
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
                              io[:2], io[2:])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8,
                              producer_name="mnist-edge")  # fmt: skip
    assert model.SerializeToString() == bench.MATMUL_ONNX
    onnx.checker.check_model(onnx.load_from_string(bench.MATMUL_ONNX))
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 5), np.float32), rng.standard_normal((5, 2), np.float32)
    (c,) = ort.InferenceSession(bench.MATMUL_ONNX).run(None, {"a": a, "b": b})
    np.testing.assert_allclose(c, a @ b, rtol=1e-5)
    assert bench.matmul_gflops(1, sizes=(128, 256), seconds=0.05) > 0.1
    assert bench.matmul_gflops(1, sizes=(64,), seconds=1e-9) > 0.01  # one call at least


def runtime_cases(folder: Path) -> tuple[str, ...]:
    """ExecuTorch and LiteRT, where the export wrote their file (their converters are
    installed) and their runtime is installed."""
    from mnist_edge.edge.runners import BACKENDS

    found = [(name, folder / f"mnist_cnn.{suffix}") for name, suffix in
             (("executorch", "pte"), ("litert", "tflite"))]  # fmt: skip
    return tuple(name for name, path in found if path.is_file() and BACKENDS[name].installed())


def openvino_cases() -> tuple[str, ...]:
    """The OpenVINO cases for an fp32 ONNX file alone, where OpenVINO is installed."""
    from mnist_edge.edge.runners import BACKENDS

    ov = BACKENDS["openvino"]
    if not ov.installed():
        return ()
    return ("openvino", "openvino-bf16") if "bf16" in ov.precisions("onnx") else ("openvino",)


def test_default_backends_follow_the_files(exported, trained, tmp_path):
    model = exported / "mnist_cnn.onnx"
    torch_cases = ("pytorch", "torchscript", "pt2")
    assert bench.default_backends(model, trained) == (
        "onnxruntime", "onnxruntime-ort", *openvino_cases(), *runtime_cases(exported),
        *torch_cases)  # fmt: skip
    assert "pytorch" not in bench.default_backends(model, tmp_path / "absent.pt")
    alone = tmp_path / "mnist_cnn.onnx"
    alone.write_bytes(model.read_bytes())
    assert bench.default_backends(alone, None) == ("onnxruntime", *openvino_cases())
    assert bench.default_backends(tmp_path / "nothing.onnx", None) == ()


def test_a_named_backend_without_its_file_names_the_export_command(exported, tmp_path):
    alone = tmp_path / "mnist_cnn.onnx"
    alone.write_bytes((exported / "mnist_cnn.onnx").read_bytes())
    result = cli("bench", "--model", alone, "--backends", "onnxruntime,torchscript")
    assert_clean_error(result, "mnist-edge export --format torchscript")
    result = cli("bench", "--model", alone, "--backends", "onnxruntime-int8")
    assert_clean_error(result, "mnist-edge quantize")
    assert_clean_error(cli("bench", "--model", tmp_path / "none.onnx"), "nothing to benchmark")


def test_timing_percentiles():
    t = timing.Timing.of([0.001 * i for i in range(1, 101)])
    assert t.min_ms == pytest.approx(1) and t.p50_ms == pytest.approx(50.5)
    assert t.p99_ms == pytest.approx(99.01) and t.iterations == 100


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"backends": ("tensorflow",)}, "unknown backend tensorflow"),
        ({"batch_sizes": (0,)}, "batch sizes"),
        ({"threads": ()}, "thread counts"),
        ({"iterations": 0}, "iterations"),
    ],
)
def test_bad_settings_are_refused(kw, message):
    with pytest.raises(ConfigError, match=message):
        bench.BenchConfig(**kw)


@pytest.fixture(scope="module")
def bench_json(exported, trained, mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = cli(
        *["bench", "--model", str(exported / "mnist_cnn.onnx"), "--checkpoint", str(trained),
         "--data-dir", str(mnist_dir), "--batch-sizes", "1,3", "--threads", "1",
         "--warmup", "1", "--iterations", "3", "--json", str(out / "b.json"),
         "--plot", str(out / "b.png")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out / "b.json", result.output


def test_bench_writes_every_field(bench_json, exported):
    path, output = bench_json
    report = json.loads(path.read_text())
    # every file but the INT8 models exists beside the model, and so does the checkpoint
    backends = ("pytorch", "torchscript", "pt2", "onnxruntime", "onnxruntime-ort",
                *openvino_cases(), *runtime_cases(exported))  # fmt: skip
    assert {(c["backend"], c["batch_size"]) for c in report["cases"]} == {
        (b, n) for b in backends for n in (1, 3)
    }
    for case in report["cases"]:
        assert CASE_KEYS <= set(case)
        assert case["iterations"] == 3 and case["threads"] == 1
        assert 0 < case["p50_ms"] <= case["p99_ms"] and case["throughput"] > 0
        assert case["cold_start_ms"] >= case["load_ms"]
        assert case["p50_vs_eager"] > 0
    eager = [c for c in report["cases"] if c["backend"] == "pytorch"]
    assert all(c["p50_vs_eager"] == 1.0 for c in eager)
    assert report["matmul_gflops"]["1"] > 0
    env = report["environment"]
    assert (
        env["cores"] >= 1
        and env["cpu"]
        and {"torch", "onnxruntime", "numpy"} <= set(env["versions"])
    )
    assert report["overhead"][0]["batch_size"] == 1
    assert "latency (ms) and throughput" in output and "Predictor.predict overhead" in output
    assert path.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_compare_catches_an_injected_regression(bench_json, exported, trained, mnist_dir, tmp_path):
    path, _ = bench_json
    report = json.loads(path.read_text())
    assert bench.compare_to_baseline(report, report, 10) == []
    faster = json.loads(path.read_text())  # a baseline 10x faster than what we measure
    for case in faster["cases"]:
        case["p50_ms"] /= 10
        case["throughput"] *= 10
    found = bench.compare_to_baseline(report, faster, 50)
    assert {r.metric for r in found} == {"p50_ms", "throughput"}
    assert all(r.change_pct > 50 for r in found)
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(faster))
    result = cli(
        *["bench", "--model", str(exported / "mnist_cnn.onnx"), "--checkpoint", str(trained),
         "--data-dir", str(mnist_dir), "--backends", "onnxruntime", "--batch-sizes", "1",
         "--threads", "1", "--warmup", "1", "--iterations", "3", "--json",
         str(tmp_path / "now.json"), "--compare", str(baseline), "--max-regression", "50"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "regression:" in result.stderr and "onnxruntime batch 1 threads 1" in result.stderr


def test_compare_with_a_bad_baseline_is_a_clean_error(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    result = cli("bench", "--compare", tmp_path / "x.json")
    assert result.exit_code == 2 and "not a bench JSON report" in result.stderr


def test_a_baseline_from_another_kind_of_cpu_is_refused(bench_json, tmp_path):
    """Timings compare only on the same ISA class: a baseline recorded with other CPU flags is
    a clean error, not a verdict."""
    from mnist_edge.edge.machine import cpu_flags

    path, _ = bench_json
    report = json.loads(path.read_text())
    other = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni") if f not in cpu_flags()]
    report["environment"].pop("isa_class", None)
    report["environment"]["cpu_flags"] = [*cpu_flags(), *other[:1]] if other else ["avx2"]
    (tmp_path / "other.json").write_text(json.dumps(report))
    assert_clean_error(cli("bench", "--compare", tmp_path / "other.json"), "another kind of CPU")
    report["environment"]["cpu_flags"] = cpu_flags()  # the same flags: accepted
    (tmp_path / "same.json").write_text(json.dumps(report))
    assert bench.load_baseline(tmp_path / "same.json")["cases"]


def test_scenarios(exported, mnist_dir, tmp_path):
    out = tmp_path / "s.json"
    result = cli(
        "bench", "--model", exported / "mnist_cnn.onnx", "--backends", "onnxruntime",
        "--batch-sizes", "1", "--threads", "1", "--iterations", "3", "--warmup", "1",
        "--data-dir", mnist_dir, "--json", out, "--scenario", "all", "--queries", "64",
        "--qps", "200", "--idle-gap", "0.05",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    found = {s["scenario"]: s for s in json.loads(out.read_text())["scenarios"]}
    assert set(found) == set(bench.SCENARIOS)
    single = found["single-stream"]
    assert single["queries"] == 64 and single["p50_ms"] <= single["p90_ms"] <= single["p99_ms"]
    server = found["server"]
    assert server["queries"] == 64 and server["achieved_qps"] > 0
    assert server["valid"] == (server["p99_ms"] <= server["latency_bound_ms"])
    assert found["offline"]["best_images_per_s"] == max(found["offline"]["images_per_s"].values())
    assert found["idle"]["after_idle_p50_ms"] > 0 and len(found["idle"]["samples_ms"]) == 5
    assert "scenario server:" in result.output


def test_bench_writes_a_report_only_where_json_says(exported, mnist_dir, tmp_path):
    """No --json, no file: nothing appears under the working folder (a report used to land in
    ./benchmarks/results/ of wherever bench ran)."""
    import os

    before = set(os.listdir("."))
    result = cli("bench", "--model", exported / "mnist_cnn.onnx", "--backends", "onnxruntime",
                 "--batch-sizes", 1, "--threads", 1, "--iterations", 2, "--warmup", 1,
                 "--data-dir", mnist_dir)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert set(os.listdir(".")) == before and "wrote" not in result.output


def test_bench_backends_take_patterns(exported, mnist_dir, tmp_path):
    """bench and tune take the same names: case names, or shell patterns over them."""
    result = cli("bench", "--model", exported / "mnist_cnn.onnx", "--backends", "onnxruntime*",
                 "--batch-sizes", 1, "--threads", 1, "--iterations", 2, "--warmup", 1,
                 "--data-dir", mnist_dir, "--json", tmp_path / "b.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    ran = {c["backend"] for c in json.loads((tmp_path / "b.json").read_text())["cases"]}
    assert ran == {"onnxruntime", "onnxruntime-ort"}  # no INT8 file there: skipped
    assert_clean_error(cli("bench", "--model", exported / "mnist_cnn.onnx", "--backends",
                           "nothing*"), "unknown backend")  # fmt: skip


def test_a_file_that_does_not_load_fails_before_the_roofline(mnist_dir, tmp_path, monkeypatch):
    """The roofline (seconds of MatMuls) is timed once a case has loaded: a broken file is a
    clean error at once, not after it."""

    def timed(*_args, **_kw):
        raise AssertionError("the roofline was timed before the model loaded")

    monkeypatch.setattr(bench, "matmul_gflops", timed)
    broken = tmp_path / "mnist_cnn.onnx"
    broken.write_bytes(b"not a model")
    result = cli("bench", "--model", broken, "--backends", "onnxruntime", "--data-dir", mnist_dir)
    assert_clean_error(result, "not a loadable ONNX model")
