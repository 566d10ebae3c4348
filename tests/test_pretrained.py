"""The pretrained model shipped inside the package: intact, accurate, and used by default."""

import json

import numpy as np
import pytest
from conftest import REAL, cli

from mnist_edge.data import load_split
from mnist_edge.files import sha256
from mnist_edge.runtime import PACKAGED, Predictor, pretrained_path

MANIFEST = json.loads((PACKAGED / "manifest.json").read_text())


@pytest.mark.parametrize("name", ["mnist_cnn.onnx", "mnist_cnn.int8.onnx"])
def test_packaged_files_match_their_manifest(name):
    entry = MANIFEST["files"][name]
    path = PACKAGED / name
    assert sha256(path) == entry["sha256"] and path.stat().st_size == entry["bytes"]
    assert entry["parity"]["passed"] is True and entry["good"] is True
    assert path.stat().st_size < 4_000_000  # a few MB at most in the wheel


def test_made_by_the_default_recipe_for_ten_epochs():
    recipe = MANIFEST["training"]["recipe"]
    assert (recipe["lr_schedule"], recipe["augment"]) == ("cosine", True)
    assert MANIFEST["training"]["epochs"] == recipe["epochs"] == 10
    assert MANIFEST["files"]["mnist_cnn.onnx"]["test_accuracy"] >= 99.4


@pytest.mark.parametrize("int8", [False, True])
def test_pretrained_accuracy(mnist_dir, int8):
    """>= 99.4% on the official test set (99.2% for INT8); on the synthetic stand-in the model
    still reads most font-drawn digits."""
    predictor = Predictor.pretrained(int8=int8)
    assert predictor.path == pretrained_path(int8=int8) and predictor.contract_from_model
    test = load_split("test", mnist_dir)
    accuracy = float((predictor.predict(test.images).labels == test.labels).mean() * 100)
    if REAL:
        assert accuracy >= (99.2 if int8 else 99.4)
        recorded = MANIFEST["files"]["mnist_cnn.int8.onnx" if int8 else "mnist_cnn.onnx"]
        assert accuracy == pytest.approx(recorded["test_accuracy"], abs=1e-9)
    else:
        assert accuracy >= 60


def test_predict_without_model_uses_exports_else_the_packaged_one(exported, tmp_path, monkeypatch):
    from PIL import Image

    image = tmp_path / "digit.png"
    Image.fromarray(np.eye(28, dtype=np.uint8)[::-1] * 255).save(image)
    monkeypatch.chdir(tmp_path)  # no exports/ here
    r = cli("predict", image)
    assert r.exit_code == 0, r.output
    assert f"model: {PACKAGED / 'mnist_cnn.onnx'} (packaged)" in r.stderr
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "mnist_cnn.onnx").write_bytes(
        (exported / "mnist_cnn.onnx").read_bytes()
    )
    r = cli("predict", image)
    assert r.exit_code == 0 and "model: exports/mnist_cnn.onnx (exported)" in r.stderr
    r = cli("predict", image, "--model", exported / "mnist_cnn.onnx")
    assert r.exit_code == 0 and "model:" not in r.stderr  # named explicitly: nothing to say
