"""`export --format triton`: the Triton model repository parses into Triton's own ModelConfig
protobuf (from tritonclient), its shapes are the ONNX file's (read with onnx, not with the
writer's ONNX Runtime), the model files are the exported ones byte for byte, and a model with
a fixed batch is refused in one line."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from conftest import cli

from mnist_edge.edge.runtime import pretrained_path
from mnist_edge.edge.triton import write_repository

onnx = pytest.importorskip("onnx", reason="onnx (train extra) reads the shapes independently")
text_format = pytest.importorskip("google.protobuf.text_format")


def model_config_class():
    """Triton's ModelConfig message. tritonclient ships model_config_pb2 inside its grpc
    package, whose __init__ needs grpcio (the [grpc] extra would pin protobuf below what onnx
    uses): load that one generated module by its path."""
    tritonclient = pytest.importorskip("tritonclient", reason="tritonclient (dev extra)")
    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ModelConfig


def parse(path: Path):
    return text_format.Parse(path.read_text(), model_config_class()())


def onnx_dims(model: Path) -> tuple[dict, dict]:
    """name -> dims without the batch, and whether the batch is dynamic, from the ONNX graph."""
    graph = onnx.load(str(model)).graph

    def dims(values):
        out = {}
        for v in values:
            d = v.type.tensor_type.shape.dim
            assert d[0].dim_param and not d[0].dim_value, f"{v.name}: fixed batch"
            out[v.name] = [x.dim_value for x in d[1:]]
        return out

    return dims(graph.input), dims(graph.output)


def check_repository(root: Path, name: str, source: Path) -> None:
    config = parse(root / name / "config.pbtxt")
    model = root / name / "1" / "model.onnx"
    assert model.read_bytes() == source.read_bytes()
    inputs, outputs = onnx_dims(model)
    assert config.name == name and config.backend == "onnxruntime"
    assert config.max_batch_size >= 1
    assert {i.name: list(i.dims) for i in config.input} == inputs
    assert {o.name: list(o.dims) for o in config.output} == outputs
    assert all(i.data_type == 11 for i in [*config.input, *config.output])  # TYPE_FP32
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    assert config.instance_group[0].kind == 2  # KIND_CPU
    labels = (root / name / config.output[0].label_filename).read_text().split()
    assert labels == [str(d) for d in range(10)]


def test_the_packaged_models_make_a_repository_triton_reads(tmp_path):
    repo = write_repository(tmp_path, pretrained_path(), pretrained_path(int8=True))
    assert [m.name for m in repo.models] == ["mnist", "mnist_int8"] and not repo.skipped
    check_repository(tmp_path / "triton", "mnist", pretrained_path())
    check_repository(tmp_path / "triton", "mnist_int8", pretrained_path(int8=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["triton"]  # nothing staged is left


def test_the_check_catches_dims_that_differ_from_the_model(tmp_path):
    write_repository(tmp_path, pretrained_path())
    config = tmp_path / "triton" / "mnist" / "config.pbtxt"
    config.write_text(config.read_text().replace("dims: [ 1, 28, 28 ]", "dims: [ 28, 28 ]"))
    with pytest.raises(AssertionError):
        check_repository(tmp_path / "triton", "mnist", pretrained_path())


def test_export_format_triton_writes_the_exported_model(trained, tmp_path):
    out = tmp_path / "out"
    result = cli("export", "--format", "triton", "--checkpoint", trained, "--output-dir", out,
                 "--no-parity")  # fmt: skip
    assert result.exit_code == 0, result.output
    check_repository(out / "triton", "mnist", out / "mnist_cnn.onnx")
    assert not (out / "triton" / "mnist_int8").exists()
    assert "mnist_int8" in result.stderr and "quantize" in result.stderr  # said, not silent
    # with an INT8 model beside it (here the packaged one), the second model is written
    shutil.copyfile(pretrained_path(int8=True), out / "mnist_cnn.int8.onnx")
    again = cli("export", "--format", "triton", "--checkpoint", trained, "--output-dir", out,
                "--no-parity")  # fmt: skip
    assert again.exit_code == 0, again.output
    check_repository(out / "triton", "mnist_int8", out / "mnist_cnn.int8.onnx")


def test_a_model_with_a_fixed_batch_is_refused_in_one_line(tmp_path):
    model = onnx.load(str(pretrained_path()))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    fixed = tmp_path / "fixed.onnx"
    onnx.save(model, str(fixed))
    from mnist_edge.edge.errors import ArtifactError

    with pytest.raises(ArtifactError, match="fixed batch dimension"):
        write_repository(tmp_path, fixed)
    assert not (tmp_path / "triton").exists() and not (tmp_path / "triton.part").exists()


def test_a_file_that_is_not_onnx_is_refused_cleanly(tmp_path):
    bad = tmp_path / "mnist_cnn.onnx"
    bad.write_bytes(b"not a model")
    from mnist_edge.edge import triton

    with pytest.raises(triton.ArtifactError, match="not a loadable ONNX model"):
        write_repository(tmp_path, bad)
