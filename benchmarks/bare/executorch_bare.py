"""ExecuTorch's Python runtime as an application calls it, with no mnist-edge code: the yardstick
its runner is held to (benchmarks/runtimes.py). The XNNPACK thread pool is sized explicitly (it
starts with every core whatever torch says) before the program loads. `load(path, threads)`
returns `run(x) -> (N, 10)` for a normalised float32 (N, 1, 28, 28) batch (at most the program's
batch bound).

    python benchmarks/bare/executorch_bare.py MODEL [--threads 1] [--batch 1] [--seconds 2]
"""

from __future__ import annotations

import numpy as np
import torch
from executorch.extension.pybindings import portable_lib
from executorch.runtime import Runtime


def load(path: str, threads: int):
    # resized only when it differs: resizing under another loaded program hangs that program
    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)
    method = Runtime.get().load_program(path).load_method("forward")

    def run(x: np.ndarray) -> np.ndarray:
        return method.execute([torch.from_numpy(x)])[0].numpy()

    return run


if __name__ == "__main__":
    from _timing import main

    main(load)
