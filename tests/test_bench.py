import json

import pytest
from typer.testing import CliRunner

from mnist_edge import bench
from mnist_edge.cli import app
from mnist_edge.errors import ConfigError

CASE_KEYS = {"backend", "batch_size", "threads", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms",
             "min_ms", "iterations", "throughput", "load_ms", "first_inference_ms",
             "cold_start_ms", "gflops", "roofline_fraction", "p50_vs_eager"}  # fmt: skip


def test_multiply_adds_are_counted_from_the_architecture():
    assert bench.model_macs() == 194_688 + 10_616_832 + 35_684_352 + 619_520
    assert bench.FLOPS_PER_IMAGE == 2 * bench.model_macs()


def test_timing_percentiles():
    t = bench.Timing.of([0.001 * i for i in range(1, 101)])
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
    result = CliRunner().invoke(
        app,
        ["bench", "--model", str(exported / "mnist_cnn.onnx"), "--checkpoint", str(trained),
         "--data-dir", str(mnist_dir), "--batch-sizes", "1,3", "--threads", "1",
         "--warmup", "1", "--iterations", "3", "--json", str(out / "b.json"),
         "--plot", str(out / "b.png")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out / "b.json", result.output


def test_bench_writes_every_field(bench_json):
    path, output = bench_json
    report = json.loads(path.read_text())
    # the .ort file exists beside the model, so its backend joins the default three
    backends = (*bench.DEFAULT_BACKENDS, "onnxruntime-ort")
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
    result = CliRunner().invoke(
        app,
        ["bench", "--model", str(exported / "mnist_cnn.onnx"), "--checkpoint", str(trained),
         "--data-dir", str(mnist_dir), "--backends", "onnxruntime", "--batch-sizes", "1",
         "--threads", "1", "--warmup", "1", "--iterations", "3", "--json",
         str(tmp_path / "now.json"), "--compare", str(baseline), "--max-regression", "50"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "regression:" in result.stderr and "onnxruntime batch 1 threads 1" in result.stderr


def test_compare_with_a_bad_baseline_is_a_clean_error(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    result = CliRunner().invoke(app, ["bench", "--compare", str(tmp_path / "x.json")])
    assert result.exit_code == 2 and "not a bench JSON report" in result.stderr
