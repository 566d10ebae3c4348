import json

import pytest

from mnist_edge.edge import manifest
from mnist_edge.edge.errors import ArtifactError


@pytest.mark.parametrize(
    "parity, gate, good",
    [
        (None, None, None),  # unchecked
        ({"passed": True}, None, True),
        ({"passed": False}, None, False),
        ({"passed": True}, {"passed": True}, True),
        ({"passed": True}, {"passed": False}, False),  # INT8: the gate fails, parity passed
        (None, {"passed": False}, False),  # a failed gate is known before parity runs
        (None, {"passed": True}, None),
    ],
)
def test_judge_is_the_one_rule_for_good(parity, gate, good):
    assert manifest.judge(parity, gate) is good


def test_register_and_record(tmp_path):
    art = tmp_path / "mnist_cnn.onnx"
    art.write_bytes(b"model")
    entry = manifest.register(tmp_path, art, "onnx", tmp_path / "absent.pt", opset=20)
    assert entry.good is None and entry.bytes == 5 and entry.source_checkpoint_sha256 == ""
    manifest.record_parity(tmp_path, {str(art): {"passed": False}})
    (back,) = manifest.artifacts(tmp_path)
    assert back.good is False and back.parity["checked"].endswith("Z")
    # a verdict for a file of another folder with the same name is not recorded here
    manifest.record_parity(tmp_path, {str(tmp_path / "other" / art.name): {"passed": True}})
    assert manifest.artifacts(tmp_path)[0].good is False


@pytest.mark.parametrize("text", ["not json", "[]", '{"artifacts": []}', '{"artifacts": {"a": 1}}'])
def test_malformed_manifests_are_artifact_errors(tmp_path, text):
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(ArtifactError, match="manifest"):
        manifest.artifacts(tmp_path)


def test_a_missing_manifest_is_empty(tmp_path):
    assert manifest.artifacts(tmp_path) == []
    assert json.dumps(manifest.read(tmp_path))  # serialisable as it is
