"""The export workflow as a library call: the same verdict a CLI user gets."""

import numpy as np
import onnx
from onnx import numpy_helper

from mnist_edge.edge import manifest
from mnist_edge.export import ExportConfig
from mnist_edge.workflow import Data, VerifyConfig, export_and_verify, parity


def test_export_and_verify_records_verdicts(trained, mnist_dir, tmp_path):
    cfg = ExportConfig(str(trained), str(tmp_path), ("onnx", "ort"))
    run = export_and_verify(cfg, check=VerifyConfig(), data=Data(str(mnist_dir), 200))
    assert run and run.problems() == []
    assert [a.format for a in run.artifacts] == ["onnx", "ort"]
    assert run.parity.checkpoint == str(trained)  # the reference defaults to the checkpoint
    assert {a.file: a.good for a in manifest.artifacts(tmp_path)} == {
        "mnist_cnn.onnx": True, "mnist_cnn.ort": True}  # fmt: skip
    assert run.to_dict()["passed"] is True


def test_a_broken_artifact_is_a_problem_and_not_good(trained, mnist_dir, tmp_path):
    export_and_verify(ExportConfig(str(trained), str(tmp_path), ("onnx",)), check=None)
    assert manifest.artifacts(tmp_path)[0].good is None  # unchecked
    path = tmp_path / "mnist_cnn.onnx"
    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer if i.name == "fc.weight")
    w = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array(w + 0.05 * np.sign(w), init.name))
    onnx.save(model, str(path))
    run = parity(None, tmp_path, VerifyConfig(str(trained)), Data(str(mnist_dir), 200))
    (problem,) = run.problems()
    assert not run and problem.startswith(f"parity FAILED for {path}; to see where, run: ")
    assert problem.endswith(f"mnist-edge parity --layers {path} --checkpoint {trained}")
    assert manifest.artifacts(tmp_path)[0].good is False


def test_parity_against_an_artifact_leaves_the_manifest_alone(trained, mnist_dir, tmp_path):
    export_and_verify(ExportConfig(str(trained), str(tmp_path), ("onnx", "ort")), check=None)
    check = VerifyConfig(str(tmp_path / "mnist_cnn.onnx"))
    run = parity([tmp_path / "mnist_cnn.ort"], tmp_path, check, Data(str(mnist_dir), 200))
    assert run and all(a.good is None for a in manifest.artifacts(tmp_path))
