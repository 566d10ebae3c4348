"""ONNX Runtime as an application calls it, with no mnist-edge code: the yardstick its runner is
held to (benchmarks/runtimes.py). `load(path, threads)` returns `run(x) -> (N, 10)` for a
normalised float32 (N, 1, 28, 28) batch.

    python benchmarks/bare/onnxruntime_bare.py MODEL [--threads 1] [--batch 1] [--seconds 2]
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort


def load(path: str, threads: int):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: x})[0]

    return run


if __name__ == "__main__":
    from _timing import main

    main(load)
