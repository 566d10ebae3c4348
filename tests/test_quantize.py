import json
from dataclasses import replace

import numpy as np
import onnx
import pytest
from conftest import assert_same_answers, cli

from mnist_edge import quantize as q
from mnist_edge.edge.data import load_split
from mnist_edge.edge.errors import ConfigError
from mnist_edge.edge.manifest import artifacts as manifest_artifacts
from mnist_edge.edge.runtime import Predictor, pretrained_path

# Labels are judged on the packaged model (ten epochs), by the default INT8 rule: a one-epoch
# model is unsure of itself, so whether its INT8 copy keeps its answers says little.
RULE = q.QuantConfig().rule


@pytest.fixture(scope="module")
def qcfg(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8")
    return q.QuantConfig(
        model=str(pretrained_path()),
        output=str(out / q.INT8_NAME),
        calibration_size=256,
    )


@pytest.fixture(scope="module")
def gate_split(mnist_dir):
    """The test digits the gate judges on (the synthetic stand-in has 1,000)."""
    return load_split("test", mnist_dir, 1000)


@pytest.fixture(scope="module")
def calibration(qcfg, mnist_dir):
    return q.calibration_images(qcfg, load_split("train", mnist_dir))


@pytest.fixture(scope="module")
def good(qcfg, gate_split, calibration):
    return q.quantize(qcfg, gate_split, calibration)


def test_int8_passes_the_default_rule_and_is_small(good):
    assert good, good.to_dict()
    assert (good.max_accuracy_drop, good.min_argmax_agreement) == (
        RULE.max_accuracy_drop, RULE.min_argmax_agreement)  # fmt: skip
    assert good.size_ratio <= 0.3
    assert good.test_images == 1000


def test_int8_keeps_the_metadata_and_records_its_settings(good):
    meta = {p.key: p.value for p in onnx.load(good.path).metadata_props}
    fp32 = {p.key: p.value for p in onnx.load(str(pretrained_path())).metadata_props}
    assert meta["mnist_edge.mean"] == fp32["mnist_edge.mean"]
    assert meta["mnist_edge.format"] == "onnx-int8"
    assert meta["mnist_edge.int8.quant_format"] == "qdq"
    assert meta["mnist_edge.int8.per_channel"] == "True"
    assert meta["mnist_edge.int8.reduce_range"] == "True"  # the default: same answers on any CPU
    assert float(meta["mnist_edge.int8.max_accuracy_drop"]) == RULE.max_accuracy_drop
    assert float(meta["mnist_edge.int8.min_argmax_agreement"]) == RULE.min_argmax_agreement
    ops = {n.op_type for n in onnx.load(good.path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_gate_fails_on_calibration_with_blank_images(qcfg, gate_split, calibration, tmp_path):
    blank = np.zeros_like(calibration)
    bad = q.quantize(replace(qcfg, output=str(tmp_path / "bad.onnx")), gate_split, blank)
    assert not bad
    assert bad.accuracy_drop > RULE.max_accuracy_drop


def test_gate_verdict_follows_the_rule_at_its_edges(good):
    """Fixed numbers, not the model's: exactly at a limit passes, a hair beyond fails."""
    at_limit = replace(good, fp32_accuracy=99.0, int8_accuracy=98.8, argmax_agreement=99.0,
                       max_accuracy_drop=0.2, min_argmax_agreement=99.0)  # fmt: skip
    assert at_limit and at_limit.problem() is None
    assert not replace(at_limit, int8_accuracy=98.7)
    assert not replace(at_limit, argmax_agreement=98.9)
    assert "INT8 gate FAILED" in replace(at_limit, int8_accuracy=98.0).problem()


def test_ort_file_round_trips_through_the_predictor(exported, mnist_dir):
    digits = load_split("test", mnist_dir, 200).images
    fp32 = Predictor(exported / "mnist_cnn.onnx")
    ort_model = Predictor(exported / "mnist_cnn.ort")
    assert ort_model.contract_from_model
    x = fp32.preprocess(digits)
    assert_same_answers(fp32.run(x), ort_model.run(x))
    config = (exported / q.ORT_CONFIG_NAME).read_text()
    assert "Gemm" in config and "LogSoftmax" in config


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"quant_format": "fp8"}, "quant format"),
        ({"calibration_method": "magic"}, "calibration must be"),
        ({"calibration_size": 0}, "calibration size"),
        ({"max_accuracy_drop": -1}, "drop limit"),
        ({"min_argmax_agreement": 101}, "agreement"),
    ],
)
def test_bad_settings(kw, message):
    with pytest.raises(ConfigError, match=message):
        q.QuantConfig(**kw)


def test_cli_gate_failure_exits_1_and_marks_the_model_not_good(
    exported, trained, mnist_dir, tmp_path, monkeypatch
):
    real = q.calibration_images
    monkeypatch.setattr(q, "calibration_images",
                        lambda cfg, train: np.zeros_like(real(cfg, train)))  # fmt: skip
    model = tmp_path / "mnist_cnn.onnx"
    model.write_bytes((exported / "mnist_cnn.onnx").read_bytes())
    result = cli(
        *["quantize", "--model", str(model), "--checkpoint", str(trained), "--data-dir",
         str(mnist_dir), "--test-limit", "500", "--calibration-size", "64", "--no-parity",
         "--json", str(tmp_path / "q.json")],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "INT8 gate FAILED" in result.stderr
    (entry,) = [a for a in manifest_artifacts(tmp_path) if a.format == "onnx-int8"]
    assert entry.good is False and entry.extra["gate"]["passed"] is False
    assert json.loads((tmp_path / "q.json").read_text())["int8_gate"]["passed"] is False


def test_cli_export_quantize_runs_task_judged_parity(trained, mnist_dir, tmp_path):
    """The plumbing: the rule given on the command line is written into the INT8 model and
    parity judges it by that rule (a rule any model passes: a one-epoch model's labels are not
    what this checks)."""
    result = cli(
        *["export", "--format", "onnx", "--quantize", "int8", "--checkpoint", str(trained),
         "--output-dir", str(tmp_path), "--data-dir", str(mnist_dir), "--test-limit", "500",
         "--calibration-size", "128", "--max-accuracy-drop", "100", "--min-agreement", "0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "INT8 gate passed" in result.output, result.output
    assert "judged on argmax agreement and accuracy drop" in result.output
    entries = {a.format: a for a in manifest_artifacts(tmp_path)}
    int8 = entries["onnx-int8"]
    assert int8.parity["judge"] == "task" and int8.parity["passed"] is True
    assert int8.parity["rule"]["max_accuracy_drop"] == 100
    assert int8.parity["rule"]["min_argmax_agreement"] == 0
    assert int8.good is True and int8.extra["gate"]["passed"] is True


@pytest.fixture(scope="module")
def degraded(qcfg, gate_split, calibration, tmp_path_factory):
    """A fault: calibration on images at a third of their brightness, so activations clip at a
    third of their range. With 7-bit weights the INT8 answers are the same on every CPU, so the
    loss is too: 0.9 points on the first 1,000 real test digits, 17 on the synthetic ones."""
    out = tmp_path_factory.mktemp("degraded") / "mnist_cnn.int8.onnx"
    cfg = replace(qcfg, output=str(out), max_accuracy_drop=100.0, min_argmax_agreement=0.0)
    r = q.quantize(cfg, gate_split, calibration // 3)
    assert r.accuracy_drop > RULE.max_accuracy_drop, "the fault must break the default rule"
    return r


@pytest.mark.parametrize("margin, passes", [(+0.15, True), (-0.15, False)])
def test_gate_and_parity_apply_one_rule(degraded, qcfg, gate_split, calibration, margin, passes):
    """A drop beyond the default but within the chosen limit passes both the gate and parity;
    the same drop beyond a tighter limit fails both (one rule, read from the INT8 model's
    metadata). Parity's reference is the fp32 model the INT8 one came from."""
    from mnist_edge.edge.parity import check_against

    drop, agreement = degraded.accuracy_drop, degraded.argmax_agreement
    cfg = replace(qcfg, output=degraded.path, max_accuracy_drop=drop + margin,
                  min_argmax_agreement=agreement - 5.0)  # fmt: skip
    gate = q.quantize(cfg, gate_split, calibration // 3)
    assert gate.accuracy_drop == pytest.approx(drop)  # same calibration, same model
    report = check_against(qcfg.model, [gate.path], gate_split)
    assert bool(gate) is passes
    assert report.passed is passes, report.artifacts[0].verdict()
