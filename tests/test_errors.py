"""errors.reading: the one place foreign readers' exceptions become the project's errors."""

import gzip
import json
import zipfile

import numpy as np
import pytest

from mnist_edge.edge.errors import (
    ArtifactError,
    CheckpointError,
    DataError,
    InputError,
    MnistEdgeError,
    reading,
    reason,
)


def _raised(fn) -> BaseException:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the test wants whatever the library raises
        return exc
    raise AssertionError("expected the foreign reader to fail")


def foreign_failures(tmp_path):
    """Real exceptions from the real libraries, each on a file it cannot read."""
    from PIL import Image

    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    bomb = tmp_path / "bomb.png"
    Image.new("L", (1, 1)).save(bomb)
    gz = tmp_path / "cut.gz"
    gz.write_bytes(gzip.compress(b"x" * 10_000)[:40])
    return {
        "pillow: not an image": (lambda: Image.open(junk), "Pillow can read"),
        "zipfile: not a zip": (lambda: zipfile.ZipFile(junk), "not a zip archive"),
        "gzip: truncated": (lambda: gzip.open(gz).read(), "truncated"),
        "json: not json": (lambda: json.loads('{"a": '), "Expecting value"),
        "os: a folder": (lambda: open(tmp_path, "rb"), "Is a directory"),
    }


def test_foreign_exceptions_become_one_line_errors_naming_the_file(tmp_path):
    for name, (fail, words) in foreign_failures(tmp_path).items():
        exc = _raised(fail)
        assert not isinstance(exc, MnistEdgeError), name
        with pytest.raises(InputError) as caught:
            with reading(tmp_path / "x", "a readable thing", InputError):
                raise exc
        message = str(caught.value)
        assert message.startswith(f"{tmp_path / 'x'} is not a readable thing: "), message
        assert words in message and "\n" not in message, (name, message)
        assert caught.value.__cause__ is exc  # the original stays for debugging


def test_protobuf_and_torch_errors_are_recognised_without_importing_them_here(tmp_path):
    onnx = pytest.importorskip("onnx")
    torch = pytest.importorskip("torch")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x0a\xff\xff\xff\xff\x0f" + b"\x00" * 64)
    assert "protobuf" in reason(_raised(lambda: onnx.load(str(junk))))
    layer = torch.nn.Linear(2, 2)
    exc = _raised(lambda: layer.load_state_dict({"weight": torch.zeros(3, 3)}))
    assert "size mismatch" in reason(exc)  # the line after torch's "Error(s) in loading ...:"


def test_our_errors_and_ctrl_c_pass_through(tmp_path):
    with pytest.raises(DataError, match="^ours$"):
        with reading(tmp_path, "anything", ArtifactError):
            raise DataError("ours")
    with pytest.raises(KeyboardInterrupt):
        with reading(tmp_path, "anything", ArtifactError):
            raise KeyboardInterrupt
    wrapped = RuntimeError("export failed")
    wrapped.__cause__ = KeyboardInterrupt()  # torch.onnx wraps Ctrl-C in its own error
    with pytest.raises(KeyboardInterrupt):
        with reading(tmp_path, "anything", CheckpointError):
            raise wrapped


def test_unknown_exceptions_keep_their_first_line():
    assert reason(ValueError("first line\nsecond line")) == "first line"
    assert reason(ValueError()) == "ValueError"
    assert reason(OSError(28, "No space left on device")) == "No space left on device"
