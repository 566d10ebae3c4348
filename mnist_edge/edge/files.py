"""Atomic file writes, ONNX files without build-machine paths, and hashes (torch-free)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import OutputError, reason

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto

# Node metadata that names files of the machine that built the model: torch.onnx records a
# Python stack trace per node, with the absolute paths of model.py and of torch's own sources.
# Dropped from every ONNX file mnist-edge writes, so that one checkpoint exports to the same
# bytes from any checkout and an artifact says nothing about the build machine. The module
# scopes (pkg.torch.onnx.name_scopes, what `parity --layers` pairs layers by) stay.
BUILD_MACHINE_KEYS = ("pkg.torch.onnx.stack_trace",)


def atomic_write(path: Path | str, write: Callable[[Path], Any]) -> None:
    """Call `write(tmp_path)`, then rename onto `path`: readers never see a partial file.

    The temporary file has the real name, inside a hidden temporary folder beside `path`: some
    writers check the extension (torch.export), and torch's archives take their root folder's
    name from the file name, so a random name would make every export's bytes differ."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))
    except OSError as exc:
        raise OutputError(f"cannot write to {path.parent}: {exc.strerror or exc}") from exc
    tmp = folder / path.name
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # artifacts are meant to be shared
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch's zip writer raises RuntimeError on ENOSPC
        shutil.rmtree(folder, ignore_errors=True)
        raise OutputError(f"cannot write {path}: {_write_failure(exc, path.parent)}") from exc
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)


def _write_failure(exc: BaseException, folder: Path) -> str:
    """Why a write failed, in words: the OS's reason, or a full disk behind a library's error."""
    if not isinstance(exc, OSError):  # torch's writer: a RuntimeError that does not say why
        try:
            if shutil.disk_usage(folder).free < 4 << 20:  # under 4 MiB left: the likely cause
                return "No space left on device"
        except OSError:
            pass
        limit = _file_size_limit()
        if limit is not None:
            return f"File too large (this process may write files of {limit:,} bytes at most)"
    return reason(exc)


def _file_size_limit() -> int | None:
    """The process's file-size limit (ulimit -f) in bytes, None when unlimited or unknown."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def _graphs(graph: GraphProto) -> list[GraphProto]:
    """A graph and every subgraph inside its nodes' attributes (If/Loop/Scan bodies)."""
    found = [graph]
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                found += _graphs(sub)
    return found


def strip_build_machine(model: ModelProto) -> int:
    """Remove BUILD_MACHINE_KEYS from every node's metadata (graphs, subgraphs, functions);
    returns how many entries went."""
    removed = 0
    nodes = [n for g in _graphs(model.graph) for n in g.node]
    nodes += [n for f in model.functions for n in f.node]
    for node in nodes:
        keep = [(p.key, p.value) for p in node.metadata_props if p.key not in BUILD_MACHINE_KEYS]
        removed += len(node.metadata_props) - len(keep)
        if len(keep) != len(node.metadata_props):
            del node.metadata_props[:]
            for key, value in keep:
                node.metadata_props.add(key=key, value=value)
    return removed


def save_onnx(model: ModelProto, path: Path | str) -> None:
    """Write an ONNX model atomically, without build-machine paths (one self-contained file)."""
    import onnx

    strip_build_machine(model)
    atomic_write(path, lambda tmp: onnx.save_model(model, str(tmp)))


def write_json(path: Path | str, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, default=str) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (every timestamp mnist-edge writes)."""
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
