"""Where a command has got to, for whatever supervises it: each phase's name on a line, written
to the file descriptor named by $MNIST_EDGE_PHASE_FD (nothing when it is unset).

Tests use it to act at a phase instead of after a number of seconds, which lands in another
phase on a faster CPU: the Ctrl-C tests interrupt a command when it reports "data", "parity",
"done" (the work finished, output written) or "exit" (the last moment before the process
ends). A write that fails (the reader went away) turns the marks off.
"""

from __future__ import annotations

import os

ENV = "MNIST_EDGE_PHASE_FD"
_fd: int | None = None
try:
    _fd = int(os.environ[ENV]) if os.environ.get(ENV) else None
except ValueError:
    _fd = None


def mark(name: str) -> None:
    """Report reaching phase `name` (one line)."""
    global _fd
    if _fd is None:
        return
    try:
        os.write(_fd, name.encode() + b"\n")
    except OSError:
        _fd = None
