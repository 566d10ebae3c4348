"""Layerwise parity: it names the layer a fault is in, and says why when it cannot pair."""

import numpy as np
import onnx
import pytest
from conftest import assert_clean_error, cli
from onnx import numpy_helper

from mnist_edge import layers
from mnist_edge.edge.data import load_split
from mnist_edge.edge.errors import ArtifactError
from mnist_edge.edge.layout import Layout
from mnist_edge.edge.parity import VerifyConfig
from mnist_edge.edge.runners import load_runner
from mnist_edge.layers import TAP_LAYERS, load_tap

N = 300


def check(reference) -> VerifyConfig:
    return VerifyConfig(str(reference))


def split(mnist_dir):
    return load_split("test", mnist_dir, N)


def test_a_good_export_matches_at_every_layer(trained, exported, mnist_dir):
    r = layers.compare_layers(check(trained), [Layout(exported).onnx], split(mnist_dir))
    (art,) = r.artifacts
    assert art.passed and art.first_divergence is None and r.passed
    assert [x.layer for x in art.layers] == list(TAP_LAYERS)
    assert art.judge == "tensor"  # the parity rule (atol or rtol), layer by layer
    for x in art.layers:
        assert x.passed and x.failing_elements == 0, x
    assert art.unpaired == {}
    assert "every layer matches" in art.summary()


def perturbed(src, dest, layer):
    """1% noise (of the weights' spread) on one layer's weights, nothing else."""
    model = onnx.load(str(src))
    init = next(i for i in model.graph.initializer if i.name == f"{layer}.weight")
    w = numpy_helper.to_array(init)
    noise = np.random.default_rng(0).normal(0, 0.01 * w.std(), w.shape).astype(w.dtype)
    init.CopyFrom(numpy_helper.from_array(w + noise, init.name))
    onnx.save(model, str(dest))
    return dest


@pytest.mark.parametrize("layer", ["conv1", "conv2", "conv3", "fc"])
def test_a_fault_in_one_layer_is_found_there(trained, exported, mnist_dir, tmp_path, layer):
    bad = perturbed(Layout(exported).onnx, tmp_path / f"{layer}.onnx", layer)
    (art,) = layers.compare_layers(check(trained), [bad], split(mnist_dir)).artifacts
    assert art.first_divergence == layer
    order = list(TAP_LAYERS)
    for x in art.layers:
        assert x.passed == (order.index(x.layer) < order.index(layer)), x  # earlier layers match
    assert f"first divergence at {layer}" in art.summary()


def test_int8_is_judged_on_sqnr_and_the_taps_do_not_change_it(exported, mnist_dir, tmp_path):
    from mnist_edge.quantize import QuantConfig, calibration_images, quantize

    int8 = tmp_path / "mnist_cnn.int8.onnx"
    cfg = QuantConfig(model=str(Layout(exported).onnx), output=str(int8), calibration_size=128,
                      max_accuracy_drop=100, min_argmax_agreement=0)  # fmt: skip
    quantize(
        cfg, split(mnist_dir).head(200), calibration_images(cfg, load_split("train", mnist_dir))
    )
    x = np.random.default_rng(0).normal(0, 1, (16, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(load_tap(int8)(x)["output"], load_runner(int8)(x))
    tensors = load_tap(int8).tensors
    assert tensors["conv2"].endswith("DequantizeLinear_Output")  # compared as dequantized
    r = layers.compare_layers(check(Layout(exported).onnx), [int8], split(mnist_dir))
    (art,) = r.artifacts
    assert art.judge == "sqnr" and art.passed, art.summary()
    assert all(0 < x.sqnr_db < 80 for x in art.layers)  # quantization noise, but no fault


def test_a_model_without_scope_metadata_is_explained(trained, exported, mnist_dir, tmp_path):
    model = onnx.load(str(Layout(exported).onnx))
    for node in model.graph.node:
        del node.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    (art,) = layers.compare_layers(check(trained), [bare], split(mnist_dir)).artifacts
    assert [x.layer for x in art.layers] == ["output"] and art.passed
    assert set(art.unpaired) == {"conv1", "conv2", "conv3", "fc"}
    assert all("pkg.torch.onnx.name_scopes" in why for why in art.unpaired.values())
    result = cli("parity", "--layers", bare, "--checkpoint", trained, "--data-dir", mnist_dir,
                 "--test-limit", 50)  # fmt: skip
    assert result.exit_code == 0 and "not compared" in result.output


@pytest.mark.parametrize("fmt", ["ort", "torchscript", "pt2", "executorch"])
def test_formats_without_layer_outputs_say_why(exported, fmt):
    with pytest.raises(ArtifactError, match="cannot capture the layers"):
        load_tap(Layout(exported).artifact(fmt))


def test_cli_names_the_layer_and_a_failing_parity_points_to_it(trained, exported, mnist_dir,
                                                                tmp_path):  # fmt: skip
    bad = perturbed(Layout(exported).onnx, tmp_path / "bad.onnx", "conv3")
    common = ("--checkpoint", trained, "--data-dir", mnist_dir, "--test-limit", 100)
    plain = cli("parity", bad, *common)
    assert plain.exit_code == 1
    assert (
        f"mnist-edge parity --layers {bad} --checkpoint {trained}" in plain.stderr.splitlines()[-1]
    )
    out = tmp_path / "layers.json"
    result = cli("parity", "--layers", bad, *common, "--json", out)
    assert result.exit_code == 1
    assert "first divergence at conv3" in result.stderr and "conv1, conv2 match" in result.stderr
    import json

    report = json.loads(out.read_text())
    assert report["artifacts"][0]["first_divergence"] == "conv3" and report["passed"] is False
    assert_clean_error(cli("parity", "--layers", Layout(exported).ort, *common),
                       "cannot capture the layers")  # fmt: skip
