"""Run a model on another CPU than this one, with QEMU user mode (torch-free). Development
tooling for tests/ and benchmarks/ (the INT8 and ARM checks), not part of the installed package.

- x86-64: `qemu-x86_64-static -cpu Haswell` runs this very Python on an x86-64 with AVX2 and FMA
  but no AVX-512 and no VNNI, where ONNX Runtime's u8 x s8 kernel saturates.
- ARM: `qemu-aarch64-static -cpu neoverse-n1` runs a Debian arm64 root's Python with the edge
  install's aarch64 wheels and the litert extra's (`.ci/arm-root` builds both:
  `Arm.from_cache()` finds them). ExecuTorch is not there: its Python runtime imports torch, and
  PyPI's torch 2.14.1 for aarch64 is the CUDA build, which will not import without CUDA's
  libraries.

Debian's qemu-user-static provides the emulators.

    python tests/devtools/emulate.py MODEL INPUTS.npy OUTPUTS.npy   (what runs under emulation)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_edge.edge.errors import ConfigError

SCRIPT = Path(__file__).resolve()  # run by path under emulation: the ARM root's install has no
# tests/ (it finds mnist_edge in the aarch64 site folder, this file on the host's disk)

QEMU = {"x86_64": "qemu-x86_64-static", "aarch64": "qemu-aarch64-static"}
ARM_CPU = "neoverse-n1"  # Arm's server core (Graviton 2, Ampere Altra): NEON with dot product


def qemu(arch: str = "x86_64") -> str | None:
    """The QEMU user-mode binary for `arch`, or None when it is not installed."""
    return shutil.which(QEMU[arch])


def run_model(model: Path | str, inputs: np.ndarray) -> np.ndarray:
    """The model's outputs on its format's backend (ONNX Runtime, LiteRT, ExecuTorch) with
    mnist-edge's settings, one thread, in batches of 64."""
    from mnist_edge.edge.runners import load_runner

    runner = load_runner(model, threads=1)
    return np.concatenate([runner(inputs[i : i + 64]) for i in range(0, len(inputs), 64)])


@dataclass(frozen=True)
class Arm:
    """A Debian arm64 root (its Python) and a folder of aarch64 packages, from .ci/arm-root."""

    root: Path
    site: Path

    @classmethod
    def from_cache(cls, cache: Path | str | None = None) -> Arm:
        folder = Path(cache or os.environ.get("MNIST_EDGE_ARM_CACHE")
                      or Path.home() / ".cache" / "mnist-edge" / "arm64")  # fmt: skip
        arm = cls(folder / "root", folder / "site")
        if not (arm.python.is_file() and (arm.site / "mnist_edge").is_dir()):
            raise ConfigError(f"no arm64 root in {folder}: build it with `bash .ci/arm-root`")
        return arm

    @property
    def python(self) -> Path:
        return self.root / "usr" / "bin" / "python3.11"


def command(argv: list[str], *, cpu: str = "Haswell", arm: Arm | None = None) -> list[str]:
    """`python ARGV` under QEMU: this Python on an emulated x86-64 `cpu`, or `arm`'s Python on
    an emulated ARM_CPU (then `cpu` is ignored)."""
    arch = "aarch64" if arm else "x86_64"
    binary = qemu(arch)
    if binary is None:
        raise ConfigError(f"{QEMU[arch]} is not installed (apt-get install qemu-user-static)")
    if arm:
        return [binary, "-cpu", ARM_CPU, "-L", str(arm.root), str(arm.python), *argv]
    return [binary, "-cpu", cpu, sys.executable, *argv]


def environment(arm: Arm | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if arm:
        env["PYTHONPATH"] = str(arm.site)
    return env


def run(argv: list[str], *, cpu: str = "Haswell", arm: Arm | None = None,
        timeout: float = 3600, **kw: object) -> subprocess.CompletedProcess:  # fmt: skip
    """Run `python ARGV` under emulation; a failure raises with the last line it printed."""
    proc = subprocess.run(
        command(argv, cpu=cpu, arm=arm),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment(arm),
        **kw,
    )  # type: ignore[call-overload]
    if proc.returncode != 0:
        noise = "TCG doesn't support"  # QEMU's notes on CPU features it leaves out
        said = [line for line in proc.stderr.splitlines() if noise not in line]
        raise RuntimeError(f"emulated run failed ({proc.returncode}): {said[-1:] or ''}")
    return proc


def run_emulated(
    model: Path | str, inputs: np.ndarray, cpu: str = "Haswell", timeout: float = 3600,
    arm: Arm | None = None,
) -> np.ndarray:  # fmt: skip
    """run_model(model, inputs) in a new Python under QEMU (see command())."""
    with tempfile.TemporaryDirectory() as tmp:
        x, y = Path(tmp) / "x.npy", Path(tmp) / "y.npy"
        np.save(x, np.ascontiguousarray(inputs, np.float32))
        run([str(SCRIPT), str(model), str(x), str(y)], cpu=cpu, arm=arm,
            timeout=timeout)  # fmt: skip
        return np.load(y)


if __name__ == "__main__":
    model_path, inputs_path, outputs_path = sys.argv[1:4]
    np.save(outputs_path, run_model(model_path, np.load(inputs_path)))
