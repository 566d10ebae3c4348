"""`python -m mnist_edge` and the `mnist-edge` console script.

The CLI is imported inside run(), so that Ctrl-C while the heavy modules load still ends with
one `error: interrupted` line and exit code 130, as it does at any later moment. The compiled
libraries a command always needs (torch, onnx, ...) are imported first, with Ctrl-C held back:
a KeyboardInterrupt raised inside their C++ initialisation aborts the whole process instead.
"""

import importlib
import signal
import sys

HEAVY = {  # command -> compiled modules it imports (quantize checks parity against PyTorch)
    "train": ("torch",),
    "export": ("torch", "onnx"),
    "quantize": ("torch", "onnx", "onnxruntime.quantization"),
}


def _import_holding_interrupts(name: str) -> None:
    held: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda *_: held.append(1))
    except ValueError:  # not the main thread: import as usual
        previous = None
    try:
        importlib.import_module(name)
    except ImportError:
        pass  # the command itself says what to install
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt


def run() -> None:
    try:
        for module in HEAVY.get(sys.argv[1] if len(sys.argv) > 1 else "", ()):
            _import_holding_interrupts(module)
        from .cli import main

        main()
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    run()
