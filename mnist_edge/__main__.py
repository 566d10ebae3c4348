"""`python -m mnist_edge` and the `mnist-edge` console script.

The CLI is imported inside run(), so that Ctrl-C while the heavy modules load still ends with
one `error: interrupted` line and exit code 130, as it does at any later moment. The compiled
libraries a command always needs (torch, onnx, ...) are imported first, with Ctrl-C held back:
a KeyboardInterrupt raised inside their C++ initialisation aborts the whole process instead.
"""

import importlib
import os
import signal
import sys

# command -> compiled modules it imports (quantize checks parity against PyTorch). torch loads
# ~1,100 more modules on first use (the optimizer's first step pulls in torch._dynamo, sympy and
# triton, with torch.distributed); some of that code swallows a KeyboardInterrupt raised inside
# it, so a Ctrl-C there was lost (seen: train went on to the end, exit 0). Imported here, with
# Ctrl-C held back, they cost no extra time: each command listed loads them anyway.
TORCH_LAZY = ("torch._dynamo", "torch.distributed")
HEAVY = {
    "train": ("torch", *TORCH_LAZY, "torchvision"),
    "export": ("torch", *TORCH_LAZY, "onnx"),
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
        _exit_now(130)
    except SystemExit as done:
        if done.code == 130:  # the CLI already said "error: interrupted"
            _exit_now(130)
        raise


def _exit_now(code: int) -> None:
    """Exit at once, with CODE. A KeyboardInterrupt that once passed through C code calling
    PyRun_* (pybind11's exec does) leaves CPython's "unhandled Ctrl-C" flag set even after we
    caught it, and the interpreter would then end itself with SIGINT (exit status -2) instead of
    130. Files are already complete (every write is atomic), so skipping the interpreter's
    shutdown loses nothing but the flag."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
