"""One error tree for mnist-edge, and the one place foreign exceptions are translated into it.

    MnistEdgeError              anything a user can fix; the CLI prints its message in one line
    ├── ConfigError             a setting out of range (0 epochs, negative learning rate, ...)
    ├── DataError               MNIST not found, unreadable, or smaller than asked for
    ├── CheckpointError         checkpoint missing, corrupt, or of another architecture
    ├── ArtifactError           exported model missing, corrupt, or not this model
    ├── InputError              predictor input of the wrong shape, dtype or values
    ├── OutputError             an output path that cannot be written
    ├── ClusterError            a Ray cluster unreachable, or a job on it that lost answers
    ├── ServeError              a server whose workers could not start
    └── MissingDependency       the command needs an extra that is not installed (torch, ...)

Messages are sentences that say what is wrong and what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TRAIN_EXTRA = "pip install 'mnist-edge[train]'"
# Modules that only the `train` extra brings; the edge install has numpy and onnxruntime alone.
TRAIN_ONLY_MODULES = ("torch", "torchvision", "onnx", "onnxscript")
# optional package -> the extra that installs it
EXTRAS = {"ray": "ray", "openvino": "openvino", "executorch": "executorch",
          "ai_edge_litert": "litert", "litert_torch": "litert-export",
          "ai_edge_quantizer": "litert-export", "opentelemetry": "tracing"}  # fmt: skip


class MnistEdgeError(Exception):
    """Base class: a problem the user can act on (no traceback needed)."""


class ConfigError(MnistEdgeError, ValueError):
    """A configuration value is out of range."""


class DataError(MnistEdgeError):
    """The MNIST data cannot be found or read."""


class CheckpointError(MnistEdgeError):
    """A training checkpoint cannot be used."""


class ArtifactError(MnistEdgeError):
    """An exported model cannot be used."""


class InputError(MnistEdgeError, ValueError):
    """Input given to the predictor does not fit the model."""


class OutputError(MnistEdgeError):
    """An output file or folder cannot be written."""


class ClusterError(MnistEdgeError):
    """A Ray cluster cannot be reached, or a job on it did not give every answer."""


class ServeError(MnistEdgeError):
    """A server could not start its worker processes."""


class MissingDependency(MnistEdgeError, ImportError):
    """A command needs a package of an extra that is not installed."""


def missing_dependency(module: str, what: str = "this command") -> MissingDependency:
    """The error for an absent optional module, naming the install command."""
    top = module.split(".")[0]
    if top in TRAIN_ONLY_MODULES:
        return MissingDependency(
            f"{what} needs {top}, which the edge install leaves out; install it with {TRAIN_EXTRA}"
        )
    if top in EXTRAS:
        return MissingDependency(
            f"{what} needs {top}; install it with pip install 'mnist-edge[{EXTRAS[top]}]'"
        )
    return MissingDependency(f"{what} needs the Python package {top!r}; install it with pip")


def translate(exc: BaseException) -> MnistEdgeError | None:
    """A foreign exception as a one-line MnistEdgeError, or None when it is a real bug.

    The CLI calls this for anything that is not already an MnistEdgeError: missing extras,
    out-of-space and permission errors on output files, and the like.
    """
    if isinstance(exc, MnistEdgeError):
        return exc
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return missing_dependency(exc.name)
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return OutputError(f"cannot read or write{where}: {exc.strerror}")
    return None


# What a foreign reader's exception means, by class name or module.name (matched along the class's
# MRO, so that torch, Pillow, protobuf and onnxruntime need not be imported to be recognised).
FOREIGN_REASONS = {
    "DecompressionBombError": "too large to decode safely (Pillow's decompression-bomb limit)",
    "UnidentifiedImageError": "not an image format Pillow can read",
    "DecodeError": "not a protobuf of this kind (corrupt, truncated or another file type)",
    "ParseError": "not in the expected format",
    "BadZipFile": "not a zip archive (corrupt or truncated)",
    "EOFError": "ends too early (truncated)",
    "zlib.error": "corrupt compressed data",
    "UnpicklingError": "corrupt or truncated",
    "MemoryError": "too large to load into memory",
}


def reason(exc: BaseException) -> str:
    """Why a foreign library could not read or write something, in a few words for one line."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    if "Unsupported global" in text:  # torch.load(weights_only=True) met arbitrary objects
        return ("it holds objects other than plain tensors and numbers, which weights_only=True "
                "refuses; re-save it as a state_dict")  # fmt: skip
    for cls in type(exc).__mro__:
        for key in (cls.__name__, f"{cls.__module__}.{cls.__name__}"):
            if key in FOREIGN_REASONS:
                return FOREIGN_REASONS[key]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    # "Error(s) in loading state_dict for MnistCNN:" says nothing until the next lines
    return " ".join(lines[:3] if lines[0].endswith(":") else lines[:1])[:300]


@contextmanager
def reading(path: Path | str, what: str, error: type[MnistEdgeError]) -> Iterator[None]:
    """The one place foreign readers' exceptions are translated: whatever torch, Pillow,
    protobuf, onnxruntime, zipfile or the OS raise while reading `path` as `what` becomes
    `error("PATH is not WHAT: REASON")`. Our own errors and Ctrl-C pass through unchanged."""
    try:
        yield
    except MnistEdgeError:
        raise
    except Exception as exc:
        if interrupted(exc):
            raise KeyboardInterrupt from None
        raise error(f"{path} is not {what}: {reason(exc)}") from exc


def interrupted(exc: BaseException) -> bool:
    """Whether a library wrapped a KeyboardInterrupt in its own exception (torch.onnx does)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False
