"""Facts about the machine and the software, recorded beside every measured number."""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
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


def reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to /proc/self/clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float | None:
    """This process's peak resident memory (MB) since the last reset_peak_rss (or its start)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB -> MB
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB
    except (ImportError, OSError):
        return None


def has_module(name: str) -> bool:
    """Whether `import name` would find the module, without importing it."""
    if name in sys.modules:
        return sys.modules[name] is not None  # None: import blocked (as the tests do)
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


MAX_THREADS = 256  # more threads than this is a typo, and torch crashes on some huge counts


def check_threads(threads: int | None, what: str = "threads") -> int | None:
    """`threads` when it is None or 1..MAX_THREADS; a ConfigError naming it otherwise."""
    from .errors import ConfigError

    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise ConfigError(f"{what} must be 1..{MAX_THREADS}, got {threads}")
    return threads
