"""The packaged INT8 model answers the same on an emulated AVX2-only x86 (no VNNI: where ONNX
Runtime's u8 x s8 kernel saturates) as on this CPU, whatever this CPU is. `make test` installs
qemu-user-static; without it the test is skipped on a workstation and fails in CI."""

import os

import numpy as np
import pytest
from conftest import assert_same_answers
from devtools import emulate

from mnist_edge.edge import parity
from mnist_edge.edge.data import load_split
from mnist_edge.edge.errors import ConfigError
from mnist_edge.edge.machine import isa_class
from mnist_edge.edge.runtime import Predictor, pretrained_path


def _need_qemu() -> None:
    if emulate.qemu() is None:
        message = "qemu-x86_64-static is not installed (apt-get install qemu-user-static)"
        if os.environ.get("CI"):
            pytest.fail(message + ": CI must run the emulated-CPU test")
        pytest.skip(message)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="emulates an x86-64 on an x86-64")
def test_int8_answers_on_an_emulated_avx2_cpu_match_this_cpu(mnist_dir):
    """Integer kernels that do not saturate compute exact sums, so only the float tail
    (LogSoftmax) may differ, within the parity rule. With the 8-bit weights of the earlier
    packaged model, a VNNI CPU and an emulated Haswell disagreed on 0.7% of the digits, with
    logits up to 8.85 apart."""
    _need_qemu()
    predictor = Predictor.pretrained(int8=True)
    x = predictor.preprocess(load_split("test", mnist_dir, 200).images)
    here = emulate.run_model(pretrained_path(int8=True), x)
    there = emulate.run_emulated(pretrained_path(int8=True), x, cpu="Haswell")
    print(f"this CPU: {isa_class()}; max |d| to emulated Haswell {np.abs(here - there).max():.3g}")
    result = parity.compare("emulated Haswell", here, there)  # the parity rule
    assert result, (result.max_abs_diff, result.failing_elements)
    assert_same_answers(here, there)


def test_without_qemu_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setattr(emulate, "qemu", lambda arch="x86_64": None)
    with pytest.raises(ConfigError, match="apt-get install qemu-user-static"):
        emulate.run_emulated(pretrained_path(int8=True), np.zeros((1, 1, 28, 28), np.float32))
