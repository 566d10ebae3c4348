"""The quantization doctor: it blames the layer whose quantization is broken, and keeping that
layer in fp32 restores the gate."""

import json

import onnx
import pytest
from conftest import cli
from onnx import numpy_helper

from mnist_edge import doctor
from mnist_edge import quantize as q
from mnist_edge.edge.data import load_split
from mnist_edge.edge.manifest import artifacts as manifest_artifacts
from mnist_edge.layers import scoped_nodes


def break_scale(path, layer: str, factor: float = -1.0) -> None:
    """Negate one layer's weight scale in an INT8 model: its weights flip sign."""
    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer if i.name == f"{layer}.weight_scale")
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * factor, init.name))
    onnx.save(model, str(path))


@pytest.fixture
def broken_conv2(exported, monkeypatch):
    """Quantization that breaks conv2's scale whenever conv2 is quantized at all."""
    node = scoped_nodes(onnx.load(str(exported / "mnist_cnn.onnx")))["conv2"].name
    real = q.quantize_model

    def quantize_model(cfg, calibration):
        out = real(cfg, calibration)
        if node not in cfg.nodes_to_exclude:
            break_scale(out, "conv2")
        return out

    monkeypatch.setattr(q, "quantize_model", quantize_model)
    return node


def test_healthy_int8_is_diagnosed_without_blame_beyond_noise(exported, mnist_dir, tmp_path):
    out = tmp_path / "mnist_cnn.int8.onnx"
    cfg = q.QuantConfig(model=str(exported / "mnist_cnn.onnx"), output=str(out),
                        calibration_size=128)  # fmt: skip
    test = load_split("test", mnist_dir, 300)
    q.quantize(cfg, test.head(200), q.calibration_images(cfg, load_split("train", mnist_dir)))
    d = doctor.diagnose(exported / "mnist_cnn.onnx", out, test)
    assert [h.layer for h in d.layers] == ["conv1", "conv2", "conv3", "fc"]
    for h in d.layers:
        assert 25 < h.weight_sqnr_db < 80 and 5 < h.activation_sqnr_db < 80


def test_the_doctor_names_the_broken_layer(exported, mnist_dir, tmp_path, broken_conv2):
    out = tmp_path / "mnist_cnn.int8.onnx"
    q.quantize_model(q.QuantConfig(model=str(exported / "mnist_cnn.onnx"), output=str(out)),
                     q.calibration_images(q.QuantConfig(calibration_size=64),
                                          load_split("train", mnist_dir)))  # fmt: skip
    d = doctor.diagnose(exported / "mnist_cnn.onnx", out, load_split("test", mnist_dir, 300))
    by = {h.layer: h for h in d.layers}
    assert d.suspects()[0].layer == "conv2"
    assert by["conv2"].weight_sqnr_db < 1 < 25 < by["conv1"].weight_sqnr_db
    assert by["conv2"].activation_sqnr_db < by["conv1"].activation_sqnr_db


def test_auto_exclude_keeps_the_broken_layer_in_fp32_and_passes(
    exported, trained, mnist_dir, tmp_path, broken_conv2
):
    model = tmp_path / "mnist_cnn.onnx"
    model.write_bytes((exported / "mnist_cnn.onnx").read_bytes())
    args = ["quantize", "--model", model, "--checkpoint", trained, "--data-dir", mnist_dir,
            "--test-limit", 500, "--calibration-size", 128, "--max-accuracy-drop", 1.0,
            "--min-agreement", 95, "--no-parity", "--json", tmp_path / "q.json"]  # fmt: skip
    failing = cli(*args)
    assert failing.exit_code == 1 and "INT8 gate FAILED" in failing.stderr
    assert "suspects, worst first: conv2" in failing.output
    fixed = cli(*args, "--auto-exclude")
    assert fixed.exit_code == 0, fixed.output
    assert "auto-exclude" in fixed.output
    report = json.loads((tmp_path / "q.json").read_text())
    steps = report["int8_doctor"]["steps"]
    assert [s["excluded_layers"] for s in steps] == [[], ["conv2"]]
    assert [s["passed"] for s in steps] == [False, True]
    assert all(s["bytes"] > 0 and s["batch1_p50_ms"] > 0 for s in steps)
    assert steps[1]["bytes"] > steps[0]["bytes"]  # conv2's weights are fp32 again
    (entry,) = [a for a in manifest_artifacts(tmp_path) if a.format == "onnx-int8"]
    assert entry.good is None and entry.extra["gate"]["passed"] is True  # parity not run
    assert entry.extra["quantization"]["nodes_to_exclude"] == [broken_conv2]
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "mnist_cnn.int8.onnx")).metadata_props}
    assert json.loads(meta["mnist_edge.int8.nodes_to_exclude"]) == [broken_conv2]


def test_auto_exclude_exits_1_only_when_no_mix_passes(exported, trained, mnist_dir, tmp_path,
                                                       monkeypatch):  # fmt: skip
    """A gate that fails whatever is excluded: every layer is tried, in blame order, then 1."""
    from dataclasses import replace

    real = q.quantize
    monkeypatch.setattr(q, "quantize", lambda *a: replace(real(*a), int8_accuracy=0.0))
    model = tmp_path / "mnist_cnn.onnx"
    model.write_bytes((exported / "mnist_cnn.onnx").read_bytes())
    r = cli("quantize", "--model", model, "--checkpoint", trained, "--data-dir", mnist_dir,
            "--test-limit", 300, "--calibration-size", 64, "--no-parity", "--auto-exclude",
            "--json", tmp_path / "q.json")  # fmt: skip
    assert r.exit_code == 1 and "INT8 gate FAILED" in r.stderr
    steps = json.loads((tmp_path / "q.json").read_text())["int8_doctor"]["steps"]
    assert len(steps) == 5 and not any(s["passed"] for s in steps)
    assert sorted(steps[-1]["excluded_layers"]) == ["conv1", "conv2", "conv3", "fc"]
