"""Atomic file writes and hashes (torch-free)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import OutputError, reason


def atomic_write(path: Path | str, write: Callable[[Path], Any]) -> None:
    """Call `write(tmp_path)`, then rename onto `path`: readers never see a partial file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The temp name ends with the real name: some writers (torch.export) check the extension.
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{path.name}", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot write to {path.parent}: {exc.strerror or exc}") from exc
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are meant to be shared
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch's zip writer raises RuntimeError on ENOSPC
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {_write_failure(exc, path.parent)}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_failure(exc: BaseException, folder: Path) -> str:
    """Why a write failed, in words: the OS's reason, or a full disk behind a library's error."""
    if not isinstance(exc, OSError):  # torch's writer: a RuntimeError that does not say ENOSPC
        try:
            if shutil.disk_usage(folder).free < 4 << 20:  # under 4 MiB left: the likely cause
                return "No space left on device"
        except OSError:
            pass
    return reason(exc)


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
