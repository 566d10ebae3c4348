"""Run a model on another CPU than this one: QEMU user mode runs this very Python under an
emulated processor, to see what a device of that kind answers (torch-free).

`qemu-x86_64-static -cpu Haswell` is an x86-64 with AVX2 and FMA but no AVX-512 and no VNNI:
where ONNX Runtime's u8 x s8 kernel saturates. Debian's qemu-user-static provides it.

    python -m mnist_edge.edge.emulate MODEL INPUTS.npy OUTPUTS.npy   (what runs under emulation)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .errors import ConfigError

QEMU = {"x86_64": "qemu-x86_64-static"}


def qemu(arch: str = "x86_64") -> str | None:
    """The QEMU user-mode binary for `arch`, or None when it is not installed."""
    return shutil.which(QEMU[arch])


def run_model(model: Path | str, inputs: np.ndarray) -> np.ndarray:
    """The model's outputs in ONNX Runtime with mnist-edge's session options, one thread."""
    from .runtime import load_session

    session = load_session(model, threads=1)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: inputs[i : i + 64]})[0]
                           for i in range(0, len(inputs), 64)])  # fmt: skip


def run_emulated(
    model: Path | str, inputs: np.ndarray, cpu: str = "Haswell", timeout: float = 1800
) -> np.ndarray:
    """run_model(model, inputs) in a new Python under `qemu-x86_64-static -cpu CPU`."""
    binary = qemu("x86_64")
    if binary is None:
        raise ConfigError("qemu-x86_64-static is not installed (apt-get install qemu-user-static)")
    with tempfile.TemporaryDirectory() as tmp:
        x, y = Path(tmp) / "x.npy", Path(tmp) / "y.npy"
        np.save(x, np.ascontiguousarray(inputs, np.float32))
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        cmd = [binary, "-cpu", cpu, sys.executable, "-m", "mnist_edge.edge.emulate", str(model),
               str(x), str(y)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if proc.returncode != 0:
            noise = "TCG doesn't support"  # QEMU's notes on CPU features it leaves out
            said = [line for line in proc.stderr.splitlines() if noise not in line]
            raise RuntimeError(f"emulated run failed ({proc.returncode}): {said[-1:] or ''}")
        return np.load(y)


if __name__ == "__main__":
    model_path, inputs_path, outputs_path = sys.argv[1:4]
    np.save(outputs_path, run_model(model_path, np.load(inputs_path)))
