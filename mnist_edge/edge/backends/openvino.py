"""OpenVINO (CPU plugin): .onnx and INT8 (QDQ) .onnx files; fp32, bf16 where the CPU has it, int8.

`pip install 'mnist-edge[openvino]'`. OpenVINO reads the ONNX file itself (no conversion step)
and exposes its metadata_props as rt_info["framework"]. Its CPU plugin computes in bf16 by
default where the CPU offers it (avx512_bf16, AMX): the precision is always set explicitly here,
so "openvino" means fp32 and "openvino-bf16" means bf16, on every CPU.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, reading
from .base import Runner, check_io

HINTS = {"fp32": "f32", "bf16": "bf16"}
WHY_NOT = {"bf16": "this CPU has no bf16 arithmetic (OpenVINO lists it where the CPU has "
                   "avx512_bf16 or AMX)"}  # fmt: skip


@lru_cache(maxsize=1)
def _core():
    import openvino

    return openvino.Core()


def capabilities() -> tuple[str, ...]:
    """What OpenVINO's CPU plugin reports it can compute in here ("FP32", "BF16", "INT8"...)."""
    return tuple(_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def precisions(fmt: str) -> tuple[str, ...]:
    if fmt == "onnx-int8":
        return ("int8",)
    return ("fp32", "bf16") if "BF16" in capabilities() else ("fp32",)


def metadata(model) -> dict[str, str]:
    """The ONNX file's metadata_props, as OpenVINO's reader keeps them."""
    try:
        framework = model.get_rt_info()["framework"]
        framework = getattr(framework, "value", framework)  # an OVAny in some versions
        return {k: v.astype(str) if hasattr(v, "astype") else str(v) for k, v in framework.items()}
    except (KeyError, AttributeError, RuntimeError, TypeError):
        return {}


def load(path: Path, fmt: str, precision: str, threads: int | None, spin: bool = True) -> Runner:
    core = _core()
    with reading(path, "a model OpenVINO can read", ArtifactError):
        model = core.read_model(str(path))
    _check_io(model, path)
    config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
    if precision in HINTS:  # an INT8 (QDQ) model runs its integer kernels as quantized
        config["INFERENCE_PRECISION_HINT"] = HINTS[precision]
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    with reading(path, "a model OpenVINO can compile", ArtifactError):
        compiled = core.compile_model(model, "CPU", config)

    local = threading.local()  # one infer request per thread: a shared Runner stays thread-safe

    def run(x: np.ndarray) -> np.ndarray:
        if not hasattr(local, "request"):
            local.request = compiled.create_infer_request()
        return np.array(local.request.infer({0: x})[0])  # a copy: the request reuses its memory

    return Runner(path, fmt, run, metadata=metadata(model), session=compiled)


def _check_io(model, path: Path) -> None:
    def dims(port) -> list:
        return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]

    check_io(
        path,
        [(f"{p.get_element_type()} {p.get_partial_shape()}", p.get_element_type().is_real(),
          dims(p)) for p in model.inputs],
        [(str(p.get_partial_shape()), dims(p)) for p in model.outputs],
    )  # fmt: skip
