from pathlib import Path

import pytest

from mnist_edge.edge.errors import ArtifactError
from mnist_edge.edge.layout import FILENAMES, Layout, format_of


def test_every_format_has_one_name_and_round_trips():
    layout = Layout(Path("out"))
    for fmt, name in FILENAMES.items():
        assert layout.artifact(fmt) == Path("out") / name
        assert format_of(layout.artifact(fmt)) == fmt
    assert (
        layout.checkpoint == Path("out/mnist_cnn.pt")
        and format_of(layout.checkpoint) == "checkpoint"
    )
    assert (layout.onnx, layout.int8, layout.ort) == tuple(
        layout.artifact(f) for f in ("onnx", "onnx-int8", "ort")
    )
    assert Layout.beside("a/b/mnist_cnn.onnx").int8 == Path("a/b/mnist_cnn.int8.onnx")
    assert layout.manifest.name == "manifest.json"


@pytest.mark.parametrize("name", ["model.h5", "weights.bin", "mnist_cnn"])
def test_unknown_names_are_refused(name):
    with pytest.raises(ArtifactError, match="cannot tell the format"):
        format_of(name)
    with pytest.raises(ArtifactError, match="unknown format"):
        Layout().artifact("tflite")
