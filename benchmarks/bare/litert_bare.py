"""LiteRT's Interpreter as an application calls it, with no mnist-edge code: the yardstick its
runner is held to (benchmarks/runtimes.py). The input is resized when the batch changes.
`load(path, threads)` returns `run(x) -> (N, 10)` for a normalised float32 (N, 1, 28, 28) batch.

    python benchmarks/bare/litert_bare.py MODEL [--threads 1] [--batch 1] [--seconds 2]
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def load(path: str, threads: int):
    interpreter = Interpreter(model_path=path, num_threads=threads)
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    size = [None]

    def run(x: np.ndarray) -> np.ndarray:
        if size[0] != len(x):
            interpreter.resize_tensor_input(inp, list(x.shape))
            interpreter.allocate_tensors()
            size[0] = len(x)
        interpreter.set_tensor(inp, x)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return run


if __name__ == "__main__":
    from _timing import main

    main(load)
