"""Checkpoints: the schema save() writes, safe loading, and every kind of bad file."""

import pytest
import torch

from mnist_edge import checkpoint as ckpt_io
from mnist_edge.edge.errors import CheckpointError


def test_checkpoint_describes_itself(trained):
    ck = torch.load(trained, weights_only=True)  # plain tensors and numbers: weights_only loads
    assert ck["format"] == ckpt_io.FORMAT and set(ckpt_io.Checkpoint.SAVED) <= set(ck)
    assert ck["model_config"]["image_size"] == 28
    assert ck["train_config"]["batch_size"] == 64 and ck["train_config"]["learning_rate"] == 1e-3
    assert ck["epoch"] == 1 and len(ck["metrics"]) == 1
    assert set(ck["data_sha256"]) == {"train", "test"}
    assert {"torch", "torchvision", "mnist_edge"} <= set(ck["versions"])
    assert "state" in ck["optimizer_state"]
    model, loaded = ckpt_io.load_model(trained)
    assert not model.training and loaded.test_accuracy == ck["test_accuracy"]


def test_interrupted_save_leaves_no_partial_file(trained, tmp_path, monkeypatch):
    target = tmp_path / "mnist_cnn.pt"

    def broken_save(obj, f):
        f.write(b"half")  # a file object: save writes through one it closes
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt_io.save(ckpt_io.Checkpoint(path=target, model_state={}, model_config={}))
    assert list(tmp_path.iterdir()) == []


def test_missing_corrupt_and_foreign_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        ckpt_io.load(tmp_path / "absent.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        ckpt_io.load(bad)
    truncated = tmp_path / "truncated.pt"
    whole = tmp_path / "whole.pt"
    torch.save({"w": torch.zeros(1000)}, whole)
    truncated.write_bytes(whole.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        ckpt_io.load(truncated)
    other = tmp_path / "other.pt"
    torch.save({"format": ckpt_io.FORMAT, "model_config": {"architecture": "resnet"}}, other)
    with pytest.raises(CheckpointError, match="architecture 'resnet'"):
        ckpt_io.load(other)
    code = tmp_path / "code.pt"
    torch.save({"x": torch.nn.Linear(2, 2)}, code)  # pickles a module: refused
    with pytest.raises(CheckpointError, match="weights_only"):
        ckpt_io.load(code)


def test_weights_of_another_shape_are_refused(tmp_path):
    state = {"conv1.weight": torch.zeros(16, 1, 3, 3), "fc.weight": torch.zeros(10, 5)}
    path = tmp_path / "sd.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="not a checkpoint of this architecture: .*size"):
        ckpt_io.load_model(path)


def test_bare_state_dict_from_the_original_script_loads(tmp_path):
    from mnist_edge.model import MnistCNN

    torch.manual_seed(0)
    m = MnistCNN()
    torch.save(m.state_dict(), tmp_path / "mnist_cnn.pt")
    rebuilt, _ = ckpt_io.load_model(tmp_path / "mnist_cnn.pt")
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(rebuilt(x), m.eval()(x))
