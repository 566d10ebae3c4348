import numpy as np
import pytest

from mnist_edge import runners
from mnist_edge.errors import ArtifactError, CheckpointError, ConfigError
from mnist_edge.layout import FILENAMES, Layout


@pytest.fixture(scope="module")
def batch(mnist_dir):
    from mnist_edge.data import batches, load_split

    return next(batches(load_split("test", mnist_dir, 16).images, 16))


def test_every_format_loads_and_agrees(trained, exported, batch):
    ref = runners.load_runner(trained)
    assert ref.format == "checkpoint" and ref.name == "pytorch"
    expected = ref(batch)
    for fmt in ("onnx", "ort", "torchscript", "pt2"):
        r = runners.load_runner(Layout(exported).artifact(fmt), threads=1)
        assert r.format == fmt and r.load_ms > 0
        out = r.run(batch)
        assert out.shape == (16, 10) and out.dtype == np.float32
        np.testing.assert_allclose(out, expected, atol=1e-4)
        # every artifact carries the preprocessing contract in its own metadata
        assert r.metadata["mnist_edge.mean"] == "0.1307", fmt


def test_backend_names_cover_every_format():
    assert set(runners.BACKENDS.values()) == set(runners.FORMATS) == set(runners.LOADERS)


def test_int8_runs_in_onnx_runtime(exported, batch, tmp_path):
    int8 = tmp_path / FILENAMES["onnx-int8"]  # a copy of the fp32 file under the int8 name
    int8.write_bytes(Layout(exported).onnx.read_bytes())
    r = runners.load_runner(int8)
    assert r.format == "onnx-int8" and r.session is not None
    assert r(batch).shape == (16, 10)


def test_bad_sources(tmp_path):
    with pytest.raises(ArtifactError, match="no onnx artifact at"):
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
