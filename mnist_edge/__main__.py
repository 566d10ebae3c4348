"""`python -m mnist_edge` and the `mnist-edge` console script.

Every run ends here, in `_finish`: Ctrl-C is ignored from then on, `error: interrupted` is
written to file descriptor 2 unless it already was, the streams are flushed, and the process
ends with os._exit. It never returns into the interpreter's own shutdown, because a SIGINT that
lands there either kills the process outright (exit status -2: Python restores the default
handler as it finalises) or ends it with 130 and no line (seen on an AMD EPYC Zen 5, where
commands finish within the window a test's signal fell in). A Ctrl-C at any moment before that
ends as exit 130 with the line as the last thing on stderr; one after the command's work is done
may still end as 0. Every file a command writes is written atomically, so skipping the
interpreter's shutdown loses nothing.

The CLI is imported inside run(), so that Ctrl-C while the heavy modules load ends the same
way. The compiled libraries a command always needs (torch, onnx, ...) are imported first, with
Ctrl-C held back: a KeyboardInterrupt raised inside their C++ initialisation aborts the process.
"""

import importlib
import os
import signal
import sys

from .edge import phases

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
EXIT_INTERRUPTED = 130


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


def _command() -> int:
    """Run the command named on the command line; its exit code."""
    phases.mark("start")
    try:
        for module in HEAVY.get(sys.argv[1] if len(sys.argv) > 1 else "", ()):
            _import_holding_interrupts(module)
        from . import render

        render.RAW_STDERR = True
        from .cli import main

        main()
    except SystemExit as done:
        code = done.code
        if code is None or isinstance(code, int):
            return code or 0
        sys.stderr.write(f"{code}\n")
        return 1
    return 0


def run() -> None:
    code = None
    while True:  # a Ctrl-C inside the ending itself starts the ending again, as 130
        try:
            if code is None:
                code = _command()
            _finish(code)
        except KeyboardInterrupt:
            if code is None or code == 0 and not _done:
                code = EXIT_INTERRUPTED


_done = False  # the command returned: a late Ctrl-C no longer changes its exit code


def _finish(code: int) -> None:
    """End the process with `code`: Ctrl-C ignored first, the interrupt line when the code is
    130 and it was not said yet, streams flushed, then os._exit (see the module docstring)."""
    global _done
    _done = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    phases.mark("done")
    if code == EXIT_INTERRUPTED:
        render = sys.modules.get("mnist_edge.render")
        if not getattr(render, "said_interrupted", False):
            os.write(2, b"error: interrupted\n")
            if render is not None:
                render.said_interrupted = True
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    phases.mark("exit")
    os._exit(code)


if __name__ == "__main__":
    run()
