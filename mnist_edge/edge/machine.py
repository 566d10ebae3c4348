"""Facts about the machine and the software, recorded beside every measured number."""

from __future__ import annotations

import importlib.util
import os
import platform
import sys

from .errors import ConfigError

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


# The CPU features that change which kernels ONNX Runtime (and OpenVINO) run, and so their speed
# and, for integer and bf16 kernels, their numbers: x86 flags from /proc/cpuinfo's "flags",
# ARM ones from its "Features".
X86_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
             "amx_bf16", "amx_int8")  # fmt: skip
ARM_FLAGS = ("asimd", "asimddp", "i8mm", "bf16", "sve", "sve2")


def _cpuinfo_features() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_flags() -> list[str]:
    """The SIMD features that decide fp32/int8/bf16 kernels (empty where unknown)."""
    have = _cpuinfo_features()
    return [w for w in (*X86_FLAGS, *ARM_FLAGS) if w in have]


def isa_class(flags: list[str] | None = None, arch: str | None = None) -> str:
    """The kind of CPU a figure was measured on, coarse enough to recur and fine enough that two
    machines of one class run the same kernels: "x86_64 avx2", "x86_64 avx512+vnni+bf16",
    "aarch64 neon+dotprod", ... A figure recorded on one class is compared exactly only with a
    figure measured on the same class."""
    have = set(cpu_flags() if flags is None else flags)
    arch = (arch or platform.machine()).lower()
    if arch in ("x86_64", "amd64"):
        base = "avx512" if "avx512f" in have else "avx2" if "avx2" in have else "sse"
        extras = [name for flag, name in (("avx512_vnni", "vnni"), ("avx_vnni", "vnni"),
                                          ("avx512_bf16", "bf16"), ("amx_int8", "amx"))
                  if flag in have]  # fmt: skip
        return "x86_64 " + "+".join([base, *dict.fromkeys(extras)])
    if arch in ("aarch64", "arm64"):
        arm = (("asimddp", "dotprod"), ("i8mm", "i8mm"), ("bf16", "bf16"), ("sve", "sve"))
        extras = [name for flag, name in arm if flag in have]
        return "aarch64 " + "+".join(["neon", *extras])
    return arch


def measured_on() -> dict[str, object]:
    """What to store beside a figure kept for later comparison."""
    return {"isa_class": isa_class(), "cpu_flags": cpu_flags(), "cpu": cpu_model()}


def versions() -> dict[str, str]:
    """Installed versions, read from package metadata (imports nothing of theirs)."""
    from importlib import metadata  # 25 ms to import: only where versions are asked for

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
        "isa_class": isa_class(),
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
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise ConfigError(f"{what} must be 1..{MAX_THREADS}, got {threads}")
    return threads
