"""ExecuTorch (.pte) and LiteRT (.tflite): written with the contract inside, at any batch, byte
for byte the same on every export, INT8 by the same gate as ONNX, run at the threads asked, and
checked by parity (which a wrong file fails) and, for LiteRT, layer by layer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_same_answers, cli

from mnist_edge.edge import parity, runners, spec
from mnist_edge.edge.data import batches, load_split
from mnist_edge.edge.errors import ArtifactError
from mnist_edge.edge.files import sha256
from mnist_edge.edge.layout import Layout
from mnist_edge.edge.manifest import artifacts as manifest_artifacts
from mnist_edge.edge.runtime import Predictor, pretrained_path
from mnist_edge.export import ExportConfig, export
from mnist_edge.quantize import QuantConfig

NEW = ("executorch", "litert")


@pytest.fixture(scope="module")
def digits(mnist_dir):
    return load_split("test", mnist_dir, 300)


@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> Path:
    """The packaged fp32 model (ten epochs): an ONNX file mnist-edge exported is a checkpoint
    too. INT8 is judged on it: a one-epoch model is unsure of itself (test_quantize.py)."""
    return pretrained_path()


@pytest.fixture(scope="module")
def int8_run(packaged, mnist_dir, tmp_path_factory):
    """`export --format executorch,litert --quantize int8` on the packaged weights, gated on
    1,000 test digits, parity against the ONNX file they came from."""
    from mnist_edge.workflow import Data, VerifyConfig, export_and_verify

    out = tmp_path_factory.mktemp("int8")
    return export_and_verify(
        ExportConfig(str(packaged), str(out), NEW),
        quant=QuantConfig(model=str(Layout(out).onnx)),
        check=VerifyConfig(),
        data=Data(str(mnist_dir), 1000),
    )


def perturbed(checkpoint: Path, dest: Path, layer: str) -> Path:
    """A bare state_dict of `checkpoint` with `layer`'s bias moved: a fault to find."""
    state = torch.load(checkpoint, weights_only=True)["model_state"]
    state = {k: v.clone() for k, v in state.items()}
    state[f"{layer}.bias"] += 0.5
    torch.save(state, dest)
    return dest


@pytest.mark.parametrize("fmt", NEW)
def test_the_contract_and_provenance_travel_inside(exported, trained, fmt):
    r = runners.load_runner(Layout(exported).artifact(fmt))
    assert spec.Contract.from_metadata(r.metadata) == spec.Contract()
    assert r.metadata["mnist_edge.format"] == fmt
    assert r.metadata["mnist_edge.source_checkpoint_sha256"] == sha256(trained)


@pytest.mark.parametrize("fmt", NEW)
def test_any_batch_answers_as_pytorch(exported, trained, digits, fmt):
    """1 and 3 (under every bound), 64 (the ExecuTorch bound), 130 (over it: fed in chunks)."""
    ref = runners.load_runner(trained)
    r = runners.load_runner(Layout(exported).artifact(fmt), threads=1)
    for n in (1, 3, 64, 130):
        batch = next(batches(np.resize(digits.images, (n, 28, 28)), n))
        out = r(batch)
        assert out.shape == (n, 10) and out.dtype == np.float32
        assert parity.compare(f"batch {n}", ref(batch), out), n


def test_the_executorch_bound_is_in_the_program(exported):
    from mnist_edge.executorch_export import MAX_BATCH

    program = runners.load_runner(Layout(exported).pte).session
    meta = program.load_method("forward").metadata
    assert list(meta.input_tensor_meta(0).sizes()) == [MAX_BATCH, 1, 28, 28]


def test_exports_are_byte_reproducible(trained, exported, tmp_path, monkeypatch):
    """Another folder, another working directory: the same bytes."""
    monkeypatch.chdir(tmp_path)
    again = tmp_path / "again" / "deeper"
    export(ExportConfig(str(trained), str(again), NEW))
    for fmt in NEW:
        assert sha256(Layout(again).artifact(fmt)) == sha256(Layout(exported).artifact(fmt)), fmt


def test_int8_versions_pass_the_onnx_gate_and_are_recorded(int8_run, packaged):
    assert not int8_run.problems(), int8_run.problems()
    gates = {g.format: g for g in int8_run.gates}
    assert set(gates) == {"executorch-int8", "litert-int8"}
    rule = QuantConfig().rule
    for fmt, g in gates.items():
        assert g.passed and g.test_images == 1000
        assert (g.max_accuracy_drop, g.min_argmax_agreement) == (
            rule.max_accuracy_drop, rule.min_argmax_agreement)  # fmt: skip
        assert g.size_ratio <= 0.3, fmt
        assert g.settings["calibration_size"] == 512
        r = runners.load_runner(g.path)
        assert r.precision == "int8" and r.metadata["mnist_edge.format"] == fmt
        assert float(r.metadata["mnist_edge.int8.max_accuracy_drop"]) == rule.max_accuracy_drop
    entries = {a.format: a for a in manifest_artifacts(int8_run.output_dir)}
    for fmt in gates:
        assert entries[fmt].extra["gate"]["passed"] and entries[fmt].good is not False
    assert {a.path.endswith(".int8.pte") or a.path.endswith(".int8.tflite")
            for a in int8_run.parity.artifacts if a.judge == "task"} == {True}  # fmt: skip
    assert int8_run.parity.passed


def test_int8_versions_are_byte_reproducible(int8_run, packaged, mnist_dir, tmp_path):
    from mnist_edge.export import write_int8
    from mnist_edge.quantize import calibration_images

    calibration = calibration_images(QuantConfig(), load_split("train", mnist_dir))
    for fmt in NEW:
        path, _ = write_int8(fmt, packaged, tmp_path, calibration, QuantConfig().rule)
        first = Layout(int8_run.output_dir).artifact(f"{fmt}-int8")
        assert sha256(path) == sha256(first), fmt


@pytest.mark.parametrize("fmt", NEW)
def test_a_broken_calibration_fails_the_gate(packaged, mnist_dir, tmp_path, fmt):
    """The gate catches an INT8 file calibrated on blank images (every activation range is the
    bias alone, so real digits saturate)."""
    from mnist_edge.export import write_int8
    from mnist_edge.quantize import gate

    cfg = QuantConfig()
    export(ExportConfig(str(packaged), str(tmp_path), (fmt,)))
    path, settings = write_int8(fmt, packaged, tmp_path, np.zeros((512, 28, 28), np.uint8),
                                cfg.rule)  # fmt: skip
    result = gate(Layout(tmp_path).artifact(fmt), path, load_split("test", mnist_dir, 500), cfg,
                  settings)  # fmt: skip
    assert not result.passed and result.problem(), result.to_dict()


def test_parity_fails_a_pte_and_a_tflite_of_another_model(trained, mnist_dir, tmp_path):
    """Files exported from a checkpoint whose conv3 bias moved: parity against the real
    checkpoint fails (exit 1) and names both."""
    wrong = perturbed(trained, tmp_path / "wrong.pt", "conv3")
    out = tmp_path / "wrong"
    export(ExportConfig(str(wrong), str(out), NEW))
    result = cli("parity", Layout(out).pte, Layout(out).tflite, "--checkpoint", trained,
                 "--data-dir", mnist_dir, "--test-limit", 200)  # fmt: skip
    assert result.exit_code == 1, result.output
    for name, fmt in (("mnist_cnn.pte", "executorch"), ("mnist_cnn.tflite", "litert")):
        assert f"{name} ({fmt}) FAIL" in result.output, result.output


def test_litert_layers_pair_every_layer_and_find_a_fault_where_it_is(
    trained, exported, mnist_dir, tmp_path
):
    from mnist_edge.layers import compare_layers
    from mnist_edge.workflow import VerifyConfig

    test = load_split("test", mnist_dir, 100)
    good = compare_layers(VerifyConfig(reference=str(trained)), [Layout(exported).tflite], test)
    art = good.artifacts[0]
    assert [row.layer for row in art.layers] == [*spec.LAYERS, "output"]
    assert art.passed and not art.unpaired
    wrong = perturbed(trained, tmp_path / "wrong.pt", "conv2")
    export(ExportConfig(str(wrong), str(tmp_path / "w"), ("litert",)))
    bad = compare_layers(VerifyConfig(reference=str(trained)), [Layout(tmp_path / "w").tflite],
                         test)  # fmt: skip
    assert bad.artifacts[0].first_divergence == "conv2"


def test_executorch_runs_at_the_threads_asked(exported, digits):
    """The XNNPACK pool is one per process and ignores torch's setting: each runner sizes it.
    Resizing it under a live program hangs that program, so a second count while a runner
    lives is refused in one line, and allowed again once it is gone, even while it lingers
    in a reference cycle that the collector has not reached yet."""
    from executorch.extension.pybindings import portable_lib

    from mnist_edge.edge.errors import ConfigError

    batch = next(batches(digits.images[:8], 8))
    pte = Layout(exported).pte
    for n in (1, 2, 1):
        runner = runners.load_runner(pte, threads=n)
        runner(batch)
        assert portable_lib._threadpool_get_thread_count() == n
        same = runners.load_runner(pte, threads=n)  # the same count beside it: fine
        assert parity.compare("same", runner(batch), same(batch))
        other = 3 - n
        with pytest.raises(ConfigError, match=f"{n} thread.*in use"):
            runners.load_runner(pte, threads=other)
        cycle: list = [runner, same]
        cycle.append(cycle)  # garbage, but alive until the collector runs
        del runner, same, cycle
    assert portable_lib._threadpool_get_thread_count() == 1


def test_a_foreign_tflite_with_a_fixed_batch_runs_at_any_batch(trained, digits, tmp_path):
    """A .tflite whose batch is fixed (as most converters write it) is fed in chunks of that
    batch, the last one padded; its answers are the dynamic file's."""
    from mnist_edge.checkpoint import load_model
    from mnist_edge.litert_export import EXAMPLE_BATCH, convert

    model, _ = load_model(trained)
    fixed = tmp_path / "fixed.tflite"
    fixed.write_bytes(convert(model))
    r = runners.load_runner(fixed, threads=1)
    ref = runners.load_runner(trained)
    for n in (1, EXAMPLE_BATCH + 3, 20):
        batch = next(batches(digits.images[:n], n))
        assert parity.compare(f"batch {n}", ref(batch), r(batch)), n


def test_a_foreign_integer_io_tflite_is_fed_through_its_own_scale(packaged, digits, tmp_path):
    """A full-integer .tflite (int8 input and output, as microcontrollers take): the runner
    quantizes the input and dequantizes the output with the file's own parameters."""
    from ai_edge_quantizer import quantizer, recipe

    from mnist_edge.checkpoint import load_model
    from mnist_edge.litert_export import convert, dynamic_batch

    model, _ = load_model(packaged)
    q = quantizer.Quantizer(bytearray(dynamic_batch(convert(model))))
    q.load_quantization_recipe(recipe.static_wi8_ai8())
    calib = [{"args_0": b} for b in batches(digits.images[:256], 64)]
    full = tmp_path / "full_int8.tflite"
    full.write_bytes(bytes(q.quantize(q.calibrate({"serving_default": calib}),
                                      enable_progress_report=False).quantized_model))  # fmt: skip
    r = runners.load_runner(full)
    inp = r.session.get_input_details()[0]
    assert inp["dtype"] == np.int8  # the file really takes integers
    got = runners.outputs(r, digits.images).argmax(1)
    want = runners.outputs(runners.load_runner(packaged), digits.images).argmax(1)
    assert (got == want).mean() >= 0.97


def test_litert_made_dynamic_is_checked_before_it_is_written(trained):
    """Made dynamic around the wrong batch, the model fails its own check (at batch 1)."""
    from mnist_edge.checkpoint import load_model
    from mnist_edge.litert_export import check_dynamic, convert, dynamic_batch

    model, _ = load_model(trained)
    fixed = convert(model)
    check_dynamic(fixed, dynamic_batch(fixed))  # the right batch passes
    with pytest.raises(ArtifactError, match="batch"):
        check_dynamic(fixed, dynamic_batch(fixed, batch=3))


def test_predict_evaluate_and_tune_take_the_new_files(int8_run, mnist_dir, tmp_path):
    """By the file's suffix; tune tries every new case beside the model and can pick one."""
    from PIL import Image

    from mnist_edge.edge.tune import TuneConfig, tune

    folder = Path(int8_run.output_dir)
    digit = load_split("test", mnist_dir, 1)
    png = tmp_path / "digit.png"
    Image.fromarray(255 - digit.images[0]).save(png)
    for fmt in ("executorch", "executorch-int8", "litert", "litert-int8"):
        path = Layout(folder).artifact(fmt)
        r = cli("predict", png, "--model", path, "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)[0]["label"] == int(digit.labels[0]), fmt
        e = cli("evaluate", "--model", path, "--data-dir", mnist_dir, "--test-limit", 100)
        assert e.exit_code == 0 and "accuracy" in e.output, e.output
    model = folder / "mnist_cnn.onnx"
    model.write_bytes(pretrained_path().read_bytes())
    report = tune(TuneConfig(str(model), threads=(1,), test_limit=300, duration=0.05,
                             backends=("executorch*", "litert*")),
                  load_split("test", mnist_dir, 300))  # fmt: skip
    tried = {t.case.name for t in report.trials}
    assert tried == {"executorch", "executorch-int8", "litert", "litert-int8"}
    assert report.best is not None and report.best.case.backend in NEW
    pred = Predictor.from_profile(report.profile)
    assert pred.backend == report.best.case.backend
    assert pred.predict(digit.images).labels[0] == digit.labels[0]


def test_serve_answers_from_a_tflite(exported, digits, tmp_path):
    """The Open Inference Protocol over a LiteRT model, as Triton's client reaches it."""
    from test_serve import Server

    model = Layout(exported).tflite
    server = Server("--model", model, cwd=tmp_path)
    try:
        import tritonclient.http as httpclient

        x = next(batches(digits.images[:16], 16))
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        got = server.client.infer("mnist", [inp]).as_numpy("log_probs")
        assert_same_answers(runners.load_runner(model)(x), got)
    finally:
        rc, _ = server.stop()
    assert rc == 0
