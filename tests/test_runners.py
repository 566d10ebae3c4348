"""The catalogue: every format loads on its backend, a registered backend appears in every
command, and what a backend cannot do here is one clear line."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_answers, cli

from mnist_edge.edge import bench, parity, runners
from mnist_edge.edge.data import load_split
from mnist_edge.edge.errors import ArtifactError, CheckpointError, ConfigError, MissingDependency
from mnist_edge.edge.layout import FILENAMES, Layout


@pytest.fixture(scope="module")
def batch(mnist_dir):
    from mnist_edge.edge.data import batches, load_split

    return next(batches(load_split("test", mnist_dir, 16).images, 16))


def test_every_format_loads_and_agrees(trained, exported, batch):
    ref = runners.load_runner(trained)
    assert (ref.format, ref.backend, ref.name) == ("checkpoint", "torch", "pytorch")
    expected = ref(batch)
    for fmt in ("onnx", "ort", "torchscript", "pt2", "executorch", "litert"):
        r = runners.load_runner(Layout(exported).artifact(fmt), threads=1)
        assert r.format == fmt and r.load_ms > 0 and r.precision == "fp32"
        out = r.run(batch)
        assert out.shape == (16, 10) and out.dtype == np.float32
        assert parity.compare(fmt, expected, out)  # the parity rule
        # every artifact carries the preprocessing contract in its own metadata
        assert r.metadata["mnist_edge.mean"] == "0.1307", fmt


def test_three_axes_and_named_cases():
    found = runners.cases()
    assert found["onnxruntime"] == ("onnxruntime", "onnx", "fp32")
    assert found["onnxruntime-int8"] == ("onnxruntime", "onnx-int8", "int8")
    assert found["openvino-bf16"] == ("openvino", "onnx", "bf16")  # same file, other precision
    assert found["pytorch"] == ("torch", "checkpoint", "fp32")
    assert found["executorch-int8"] == ("executorch", "executorch-int8", "int8")
    assert found["litert"] == ("litert", "litert", "fp32")
    assert {fmt for _, fmt, _ in found.values()} == set(runners.FORMATS)
    assert runners.case_name("openvino", "onnx", "fp32") == "openvino"


def test_int8_runs_in_onnx_runtime(exported, batch, tmp_path):
    int8 = tmp_path / FILENAMES["onnx-int8"]  # a copy of the fp32 file under the int8 name
    int8.write_bytes(Layout(exported).onnx.read_bytes())
    r = runners.load_runner(int8)
    assert (r.format, r.precision, r.backend) == ("onnx-int8", "int8", "onnxruntime")
    assert r.session is not None and r(batch).shape == (16, 10)


def test_bad_sources(tmp_path):
    with pytest.raises(ArtifactError, match=r"no model at .*absent.onnx \(onnx\)"):
        runners.load_runner(tmp_path / "absent.onnx")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        runners.load_runner(tmp_path / "absent.pt")
    for name in ("junk.onnx", "junk.pt2", "junk.torchscript.pt", "junk.ort"):
        (tmp_path / name).write_bytes(b"not a model")
        with pytest.raises(ArtifactError):
            runners.load_runner(tmp_path / name)
    with pytest.raises(ConfigError, match="unknown format"):
        runners.load_runner(tmp_path / "junk.onnx", fmt="tflite")
    with pytest.raises(ConfigError, match="threads"):
        runners.load_runner(tmp_path / "junk.onnx", threads=0)
    with pytest.raises(ConfigError, match="unknown backend 'tvm'"):
        runners.load_runner(tmp_path / "junk.onnx", backend="tvm")
    with pytest.raises(ConfigError, match="does not open onnx files"):
        runners.load_runner(tmp_path / "junk.onnx", backend="torch")


def test_a_precision_a_backend_does_not_offer_says_why(exported):
    with pytest.raises(ConfigError, match="runs onnx files at fp32 here, not bf16: ONNX Runtime"):
        runners.load_runner(Layout(exported).onnx, precision="bf16")
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        runners.load_runner(Layout(exported).onnx, precision="fp8")


# --- a backend registered at run time: one entry, and every command has it ---------------------
# This module is the backend's module: precisions() and load() below. It runs ONNX files through
# ONNX Runtime's session directly, so its answers are known.
def precisions(fmt: str) -> tuple[str, ...]:
    return ("fp32",)


def load(path, fmt: str, precision: str, threads):
    from mnist_edge.edge.backends.onnxruntime import load_session, model_metadata

    session = load_session(path, threads=threads)
    return runners.Runner(path, fmt, lambda x: session.run(None, {"input": x})[0],
                          metadata=model_metadata(session))  # fmt: skip


@pytest.fixture
def mirror():
    backend = runners.Backend("mirror", __name__, ("onnx",), {"mirror": ("onnx", "fp32")},
                              requires="numpy")  # fmt: skip
    runners.register(backend)
    yield backend
    runners.unregister("mirror")


def test_a_registered_backend_shows_in_bench_evaluate_parity_and_tune(
    mirror, exported, mnist_dir, tmp_path
):
    from mnist_edge.edge.tune import TuneConfig, tune

    model = tmp_path / "mnist_cnn.onnx"
    model.write_bytes(Layout(exported).onnx.read_bytes())
    assert "mirror" in bench.default_backends(model, None)
    r = cli("bench", "--model", model, "--backends", "mirror,onnxruntime", "--batch-sizes", 1,
            "--threads", 1, "--iterations", 3, "--warmup", 1, "--data-dir", mnist_dir,
            "--json", tmp_path / "b.json")  # fmt: skip
    assert r.exit_code == 0, r.output
    cases = json.loads((tmp_path / "b.json").read_text())["cases"]
    assert {c["backend"] for c in cases} == {"mirror", "onnxruntime"}
    evals = {}
    for backend in ("mirror", "onnxruntime"):
        r = cli("evaluate", "--model", model, "--backend", backend, "--data-dir", mnist_dir,
                "--test-limit", 200, "--json", tmp_path / f"{backend}.json")  # fmt: skip
        assert r.exit_code == 0, r.output
        evals[backend] = json.loads((tmp_path / f"{backend}.json").read_text())
    assert evals["mirror"]["confusion"] == evals["onnxruntime"]["confusion"]  # the same session
    r = cli("parity", model, "--reference", model, "--backend", "mirror", "--data-dir",
            mnist_dir, "--test-limit", 200, "--json", tmp_path / "p.json")  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["artifacts"][0]["backend"] == "mirror" and report["passed"]
    tuned = tune(
        TuneConfig(
            str(model),
            threads=(1,),
            test_limit=100,
            duration=0.05,
            backends=("mirror", "onnxruntime"),
            profile=str(tmp_path / "d.json"),
        ),
        load_split("test", mnist_dir, 100),
    )
    assert {t.case.name for t in tuned.trials} == {"mirror", "onnxruntime"}
    assert all(t.passed for t in tuned.trials)


def test_a_backend_whose_package_is_missing_names_its_extra(exported):
    runners.register(runners.Backend("phantom", __name__, ("onnx",), {"phantom": ("onnx", "fp32")},
                                     requires="no_such_package_here", extra="phantom"))  # fmt: skip
    try:
        with pytest.raises(MissingDependency, match=r"pip install 'mnist-edge\[phantom\]'"):
            runners.load_runner(Layout(exported).onnx, backend="phantom")
        assert "phantom" not in bench.default_backends(Layout(exported).onnx, None)
    finally:
        runners.unregister("phantom")


def test_one_outputs_function_for_every_runner(exported, mnist_dir):
    from mnist_edge.edge.data import load_split

    images = load_split("test", mnist_dir, 300).images
    runner = runners.load_runner(Layout(exported).onnx)
    whole = runners.outputs(runner, images)
    assert whole.shape == (300, 10)
    assert_same_answers(whole, runners.outputs(runner, images, batch_size=7))


@pytest.mark.parametrize("bad, words", [
    (np.zeros((1, 1, 28, 28), np.float64), "float64"),
    (np.zeros((1, 28, 28), np.float32), "(1, 28, 28)"),
    (np.zeros((0, 1, 28, 28), np.float32), "N >= 1"),
    ([[0.0]], "list"),
])  # fmt: skip
def test_every_runner_checks_its_input_before_the_engine_sees_it(bad, words):
    """One check, in the Runner, for every backend: a wrong batch never reaches the engine."""
    from mnist_edge.edge.backends.base import Runner
    from mnist_edge.edge.errors import InputError

    called = []
    runner = Runner(Path("m.onnx"), "onnx", lambda x: called.append(x) or np.zeros((1, 10)))
    with pytest.raises(InputError, match=re.escape(words)):
        runner(bad)
    assert called == []
    runner(np.zeros((2, 1, 28, 28), np.float32))
    assert len(called) == 1
