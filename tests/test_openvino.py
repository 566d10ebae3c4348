"""OpenVINO as an optional backend (`pip install 'mnist-edge[openvino]'`; the dev extra has it):
the same answers as ONNX Runtime at fp32 and INT8, bf16 offered only where the CPU has it, and
without the package one line naming the extra."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_same_answers, cli, decisive, output_step

from mnist_edge.edge import parity, runners
from mnist_edge.edge.data import batches, load_split
from mnist_edge.edge.errors import ConfigError
from mnist_edge.edge.machine import has_module
from mnist_edge.runtime import Predictor, pretrained_path


@pytest.fixture(scope="module")
def openvino():
    if not has_module("openvino"):
        if os.environ.get("CI"):
            pytest.fail("openvino is not installed: CI installs the dev extra, which has it")
        pytest.skip("openvino is not installed (pip install 'mnist-edge[openvino]')")
    from mnist_edge.edge.backends import openvino as backend

    return backend


@pytest.fixture(scope="module")
def x(mnist_dir):
    return next(batches(load_split("test", mnist_dir, 300).images, 300))


@pytest.mark.parametrize("int8", [False, True])
def test_openvino_answers_as_onnx_runtime(openvino, x, int8):
    """fp32: the parity rule. INT8 (7-bit weights, no saturation): OpenVINO's integer kernels
    sum exactly too, but the float tail that requantizes the logits may round a sum to the
    neighbouring step, as onnx.reference does: every logit within one step of the output's
    quantization, and the same answer wherever that step cannot turn it."""
    model = pretrained_path(int8=int8)
    ov = runners.load_runner(model, backend="openvino", threads=1)
    assert ov.backend == "openvino" and ov.precision == ("int8" if int8 else "fp32")
    assert ov.metadata["mnist_edge.mean"] == "0.1307"  # the ONNX metadata, read by OpenVINO
    want, got = runners.load_runner(model)(x), ov(x)
    if not int8:
        assert parity.compare("openvino", want, got)
        assert_same_answers(want, got)
        return
    import onnx

    step = output_step(onnx.load(str(model)))
    assert np.abs(got - want).max() <= step * 1.001, (np.abs(got - want).max(), step)
    keep = decisive(want, atol=step * 1.001, rtol=0)
    assert (got.argmax(1) == want.argmax(1))[keep].all()


def test_bf16_is_offered_only_where_the_cpu_has_it(openvino, monkeypatch):
    monkeypatch.setattr(openvino, "capabilities", lambda: ("FP32", "INT8", "BIN"))
    assert openvino.precisions("onnx") == ("fp32",)
    with pytest.raises(ConfigError, match="no bf16 arithmetic"):
        runners.load_runner(pretrained_path(), backend="openvino", precision="bf16")
    monkeypatch.setattr(openvino, "capabilities", lambda: ("FP32", "BF16", "INT8"))
    assert openvino.precisions("onnx") == ("fp32", "bf16")
    assert openvino.precisions("onnx-int8") == ("int8",)


def test_bf16_where_this_cpu_has_it(openvino, x):
    """Runs only on a CPU with bf16 (avx512_bf16 or AMX): judged by the deployment rule."""
    if "bf16" not in openvino.precisions("onnx"):
        pytest.skip(f"this CPU has no bf16 arithmetic ({openvino.capabilities()})")
    r = runners.load_runner(pretrained_path(), backend="openvino", precision="bf16")
    want, got = runners.load_runner(pretrained_path())(x), r(x)
    agreement = (want.argmax(1) == got.argmax(1)).mean() * 100
    assert agreement >= parity.TaskRule.deployment().min_argmax_agreement - 100 / len(x)


def test_the_commands_take_it(openvino, mnist_dir, tmp_path):
    from PIL import Image

    Image.fromarray(255 - load_split("test", mnist_dir, 1).images[0]).save(tmp_path / "d.png")
    r = cli("predict", tmp_path / "d.png", "--backend", "openvino")
    assert r.exit_code == 0 and "openvino" in r.stderr, r.output
    r = cli("evaluate", "--model", pretrained_path(), "--backend", "openvino", "--data-dir",
            mnist_dir, "--test-limit", 100)  # fmt: skip
    assert r.exit_code == 0 and "accuracy" in r.output, r.output
    r = cli("parity", pretrained_path(), "--reference", pretrained_path(), "--backend",
            "openvino", "--data-dir", mnist_dir, "--test-limit", 100)  # fmt: skip
    assert r.exit_code == 0, r.output
    one = Predictor.pretrained(backend="openvino").predict(np.zeros((28, 28), np.uint8))
    assert one.labels.shape == (1,)


def test_without_openvino_one_line_names_the_extra(mnist_dir):
    code = ("import sys; sys.modules['openvino'] = None\n"
            "from mnist_edge.cli import main\n"
            f"sys.argv = ['mnist-edge', 'evaluate', '--model', {str(pretrained_path())!r}, "
            f"'--backend', 'openvino', '--data-dir', {str(mnist_dir)!r}]\n"
            "main()\n")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "pip install 'mnist-edge[openvino]'" in lines[0] and "Traceback" not in r.stderr
