"""`python -m mnist_edge` and the `mnist-edge` console script.

The CLI is imported inside run(), so that Ctrl-C while the heavy modules load still ends with
one `error: interrupted` line and exit code 130, as it does at any later moment. torch is
imported first, with Ctrl-C held back, for the commands that always need it: a KeyboardInterrupt
raised inside torch's C++ initialisation aborts the whole process (SIGABRT) instead.
"""

import importlib
import signal
import sys

NEEDS_TORCH = ("train", "export")


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
        if len(sys.argv) > 1 and sys.argv[1] in NEEDS_TORCH:
            _import_holding_interrupts("torch")
        from .cli import main

        main()
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    run()
