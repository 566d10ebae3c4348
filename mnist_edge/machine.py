"""Facts about the machine and the software, recorded beside every measured number."""

from __future__ import annotations

import os
import platform
from importlib import metadata

PACKAGES = ("mnist-edge", "numpy", "onnxruntime", "onnx", "torch", "torchvision")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD features that decide fp32/int8 speed (x86 only; empty elsewhere)."""
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def versions() -> dict[str, str]:
    """Installed versions, read from package metadata (imports nothing)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def environment() -> dict[str, object]:
    """CPU, cores, thread-related variables and versions."""
    threads_env = {
        k: os.environ[k]
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE")
        if k in os.environ
    }
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "thread_env": threads_env,
        "versions": versions(),
    }
