import json
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mnist_edge.checkpoint import load as load_checkpoint
from mnist_edge.edge import spec
from mnist_edge.edge.errors import CheckpointError, ConfigError, OutputError
from mnist_edge.edge.files import sha256
from mnist_edge.edge.layout import FILENAMES
from mnist_edge.edge.manifest import artifacts as manifest_artifacts
from mnist_edge.export import FORMATS, ExportConfig, export


def test_onnx_is_valid_self_contained_and_named(exported):
    path = exported / "mnist_cnn.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [p.name for p in exported.iterdir() if p.suffix == ".data"] == []  # no side file
    assert [i.name for i in model.graph.input] == [spec.INPUT_NAME]
    assert [o.name for o in model.graph.output] == [spec.OUTPUT_NAME]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_onnx_batch_dimension_is_dynamic(exported, batch):
    session = ort.InferenceSession(str(exported / "mnist_cnn.onnx"))
    x = np.random.default_rng(batch).normal(size=(batch, 1, 28, 28)).astype(np.float32)
    (out,) = session.run(None, {"input": x})
    assert out.shape == (batch, 10) and out.dtype == np.float32
    np.testing.assert_allclose(np.exp(out).sum(1), 1.0, rtol=1e-5)


def test_onnx_metadata_carries_contract_and_provenance(exported, trained):
    meta = {p.key: p.value for p in onnx.load(str(exported / "mnist_cnn.onnx")).metadata_props}
    contract = spec.Contract.from_metadata(meta)
    assert contract == spec.Contract()
    assert contract.mean == 0.1307 and contract.std == 0.3081
    assert float(meta["mnist_edge.pixel_scale"]) == pytest.approx(1 / 255)
    assert meta["mnist_edge.input_layout"] == "NCHW"
    assert json.loads(meta["mnist_edge.class_labels"]) == [str(d) for d in range(10)]
    assert meta["mnist_edge.source_checkpoint_sha256"] == sha256(trained)
    ck = load_checkpoint(trained)
    assert float(meta["mnist_edge.test_accuracy"]) == pytest.approx(ck.test_accuracy)
    model_opset = onnx.load(str(exported / "mnist_cnn.onnx")).opset_import[0].version
    assert int(meta["mnist_edge.opset"]) == model_opset
    assert meta["mnist_edge.version"]


@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_torch_formats_carry_the_same_metadata(exported, fmt):
    with zipfile.ZipFile(exported / FILENAMES[fmt]) as z:
        name = next(n for n in z.namelist() if n.endswith("mnist_edge.json"))
        meta = json.loads(z.read(name))
    assert spec.Contract.from_metadata(meta) == spec.Contract()
    assert meta["mnist_edge.format"] == fmt


def test_torch_formats_run_at_any_batch(exported):
    ts = torch.jit.load(str(exported / FILENAMES["torchscript"]))
    pt2 = torch.export.load(str(exported / FILENAMES["pt2"])).module()
    for batch in (1, 3, 64):
        x = torch.randn(batch, 1, 28, 28)
        assert ts(x).shape == pt2(x).shape == (batch, 10)


def test_manifest_lists_every_artifact(exported, trained):
    arts = {a.format: a for a in manifest_artifacts(exported)}
    assert set(arts) == set(FORMATS)
    for art in arts.values():
        path = exported / art.file
        assert art.bytes == path.stat().st_size
        assert art.sha256 == sha256(path)
        assert art.source_checkpoint_sha256 == sha256(trained)
        assert art.created.endswith("Z")
    assert arts["onnx"].opset >= 18


def test_export_again_replaces_cleanly(trained, tmp_path):
    cfg = ExportConfig(checkpoint=str(trained), output_dir=str(tmp_path), formats=("onnx",))
    first = export(cfg)[0]
    second = export(cfg)[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "mnist_cnn.onnx"]
    assert len(manifest_artifacts(tmp_path)) == 1
    assert first.sha256 == second.sha256  # the export is deterministic


def test_unknown_format_and_bad_opset_are_refused():
    with pytest.raises(ConfigError, match="unknown export format tflite"):
        ExportConfig(formats=("tflite",))
    with pytest.raises(ConfigError, match="opset 7"):
        ExportConfig(opset=7)


def test_missing_checkpoint_and_unwritable_dir(trained, tmp_path):
    with pytest.raises(CheckpointError):
        export(ExportConfig(checkpoint=str(tmp_path / "nope.pt"), output_dir=str(tmp_path)))
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError):
        export(ExportConfig(checkpoint=str(trained), output_dir=str(tmp_path / "file" / "x")))


ARTIFACTS = ("mnist_cnn.onnx", "mnist_cnn.ort", "mnist_cnn.torchscript.pt", "mnist_cnn.pt2",
             "mnist_cnn.required_operators.config", "mnist_cnn.pte",
             "mnist_cnn.tflite")  # fmt: skip


@pytest.mark.parametrize("name", ARTIFACTS)
def test_no_artifact_names_the_build_machine(exported, name):
    import sys

    from conftest import ABSOLUTE_PATH, REPO

    data = (exported / name).read_bytes()
    assert not ABSOLUTE_PATH.findall(data), ABSOLUTE_PATH.findall(data)[:3]
    for place in (str(REPO), sys.prefix, str(exported)):
        assert place.encode() not in data, place


def test_stripping_keeps_the_layer_scopes(exported):
    from mnist_edge.layers import scoped_nodes

    model = onnx.load(str(exported / "mnist_cnn.onnx"))
    keys = {p.key for n in model.graph.node for p in n.metadata_props}
    assert "pkg.torch.onnx.stack_trace" not in keys and "pkg.torch.onnx.name_scopes" in keys
    assert set(scoped_nodes(model)) >= {"conv1", "conv2", "conv3", "fc"}


def _checkout(root, name: str):
    """A copy of the package at another path, as a second clone of the repository would be."""
    import shutil

    from conftest import REPO

    copy = root / name
    shutil.copytree(REPO / "mnist_edge", copy / "mnist_edge",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    return copy


def _in_checkout(copy, *args) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(copy)}
    r = subprocess.run([sys.executable, "-m", "mnist_edge", *map(str, args)], cwd=copy, env=env,
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_one_checkpoint_exports_the_same_bytes_from_two_checkouts(trained, mnist_dir, tmp_path):
    """ONNX, INT8, TorchScript and pt2 are byte-identical whichever path the package ran from.
    The .ort file is not: ONNX Runtime's converter writes its kernel-type table in the order of
    a hash map keyed by memory addresses, which changes from one process to the next (3 sha256s
    in 6 conversions of one ONNX file); what it holds is the same, so it computes the same."""
    made = {}
    for name in ("a", "checkout-two"):
        copy = _checkout(tmp_path, name)
        out = tmp_path / f"out-{name}"
        _in_checkout(copy, "export", "--format", "onnx,torchscript,pt2,ort", "--checkpoint",
                     trained, "--output-dir", out, "--no-parity")  # fmt: skip
        _in_checkout(copy, "quantize", "--model", out / "mnist_cnn.onnx", "--no-parity",
                     "--data-dir", mnist_dir, "--test-limit", 50, "--calibration-size", 64,
                     "--max-accuracy-drop", 100, "--min-agreement", 0)  # fmt: skip
        made[name] = out
    for file in ("mnist_cnn.onnx", "mnist_cnn.int8.onnx", "mnist_cnn.torchscript.pt",
                 "mnist_cnn.pt2", "mnist_cnn.required_operators.config"):  # fmt: skip
        assert sha256(made["a"] / file) == sha256(made["checkout-two"] / file), file
    x = np.random.default_rng(0).normal(0, 1, (16, 1, 28, 28)).astype(np.float32)
    runs = [ort.InferenceSession(str(made[n] / "mnist_cnn.ort")).run(None, {"input": x})[0]
            for n in made]  # fmt: skip
    np.testing.assert_array_equal(runs[0], runs[1])


def test_the_ort_file_can_be_made_for_arm(trained, tmp_path):
    """--ort-platform arm: the fixed optimisations for ARM devices (benchmarks/arm.py runs the
    file on an emulated ARM CPU); recorded in the manifest; a platform ORT lacks is refused."""
    from conftest import assert_clean_error, cli

    r = cli("export", "--format", "ort", "--checkpoint", trained, "--output-dir", tmp_path,
            "--ort-platform", "arm", "--no-parity")  # fmt: skip
    assert r.exit_code == 0, r.output
    (entry,) = [a for a in manifest_artifacts(tmp_path) if a.format == "ort"]
    assert entry.extra["platform"] == "arm"
    x = np.zeros((2, 1, 28, 28), np.float32)
    assert ort.InferenceSession(str(tmp_path / "mnist_cnn.ort")).run(None, {"input": x})[
        0
    ].shape == (2, 10)
    assert_clean_error(cli("export", "--format", "ort", "--checkpoint", trained, "--output-dir",
                           tmp_path, "--ort-platform", "riscv"), "ORT platform")  # fmt: skip
