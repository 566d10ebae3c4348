"""OUTPUT_DIR/manifest.json: every artifact with its hash, provenance and verdicts (torch-free).

"good" is decided in one function, `judge`: an artifact is good when its parity check passed and,
for INT8, its accuracy gate passed too; unchecked artifacts are neither good nor bad (None).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from .errors import ArtifactError, reading
from .files import sha256, utc_now, write_json
from .layout import Layout


@dataclass
class Artifact:
    """One exported file, as listed in the manifest."""

    file: str  # file name inside the output folder
    format: str
    bytes: int
    sha256: str
    opset: int | None
    created: str  # UTC, ISO 8601
    source_checkpoint: str
    source_checkpoint_sha256: str
    parity: dict[str, Any] | None = None  # verdict and key figures, once checked
    good: bool | None = None  # see judge()
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the int8 gate, the ORT config

    def path(self, output_dir: Path | str) -> Path:
        return Path(output_dir) / self.file


def judge(parity: dict[str, Any] | None, gate: dict[str, Any] | None) -> bool | None:
    """The one rule for "good": parity passed and (INT8) the gate passed; None if unchecked."""
    if gate is not None and not gate.get("passed", False):
        return False
    if parity is None:
        return None
    return bool(parity.get("passed"))


def read(output_dir: Path | str) -> dict[str, Any]:
    path = Layout(Path(output_dir)).manifest
    if not path.is_file():
        return {"mnist_edge_version": __version__, "artifacts": {}}
    with reading(path, "a valid manifest (delete it and export again)", ArtifactError):
        data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), dict):
        raise ArtifactError(f"{path} is not a valid manifest; delete it and export again")
    return data


def artifacts(output_dir: Path | str) -> list[Artifact]:
    """Every artifact the manifest lists."""
    try:
        return [Artifact(**entry) for entry in read(output_dir)["artifacts"].values()]
    except TypeError as exc:
        raise ArtifactError(f"{Layout(Path(output_dir)).manifest} has a malformed entry") from exc


def _write(output_dir: Path | str, data: dict[str, Any]) -> Path:
    data["mnist_edge_version"] = __version__
    path = Layout(Path(output_dir)).manifest
    write_json(path, data)
    return path


def register(
    output_dir: Path | str,
    path: Path,
    fmt: str,
    source_checkpoint: str | Path,
    *,
    opset: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Artifact:
    """Describe a written file and add (or replace) its manifest entry."""
    source = Path(source_checkpoint)
    extra = extra or {}
    art = Artifact(
        file=path.name,
        format=fmt,
        bytes=path.stat().st_size,
        sha256=sha256(path),
        opset=opset,
        created=utc_now(),
        source_checkpoint=str(source),
        source_checkpoint_sha256=sha256(source) if source.is_file() else "",
        good=judge(None, extra.get("gate")),
        extra=extra,
    )
    data = read(output_dir)
    data["artifacts"][art.file] = asdict(art)
    _write(output_dir, data)
    return art


def register_profile(output_dir: Path | str, path: Path, profile: dict[str, Any]) -> None:
    """List a deployment profile (mnist-edge tune) in the manifest, beside the artifacts."""
    data = read(output_dir)
    data.setdefault("profiles", {})[path.name] = {
        "file": path.name, "sha256": sha256(path), "created": utc_now(),
        **{k: profile[k] for k in ("model", "backend", "format", "precision", "threads")},
        "isa_class": profile["machine"]["isa_class"], "cpu_flags": profile["machine"]["cpu_flags"],
    }  # fmt: skip
    _write(output_dir, data)


def record_parity(output_dir: Path | str, verdicts: dict[str, dict[str, Any]]) -> None:
    """Store parity verdicts {file path: verdict} in the entries of files in this folder."""
    data = read(output_dir)
    for file, verdict in verdicts.items():
        entry = data["artifacts"].get(Path(file).name)
        if entry is None or Path(file).resolve().parent != Path(output_dir).resolve():
            continue
        entry["parity"] = {**verdict, "checked": utc_now()}
        entry["good"] = judge(entry["parity"], entry.get("extra", {}).get("gate"))
    _write(output_dir, data)
