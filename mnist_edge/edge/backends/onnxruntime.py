"""ONNX Runtime (CPU): .onnx, INT8 .onnx and .ort files; fp32 and int8 (the base install)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..runners import Runner

WHY_NOT = {"bf16": "ONNX Runtime's CPU provider computes fp32 (use the openvino backend)"}


def precisions(fmt: str) -> tuple[str, ...]:
    return ("int8",) if fmt == "onnx-int8" else ("fp32",)


def load(path: Path, fmt: str, precision: str, threads: int | None) -> Runner:
    from ..runtime import check_io, load_session, model_metadata

    session = load_session(path, threads=threads)
    in_name, out_name = check_io(session, path)

    def run(x: np.ndarray) -> np.ndarray:
        return session.run([out_name], {in_name: x})[0]

    return Runner(path, fmt, run, metadata=model_metadata(session), session=session)
