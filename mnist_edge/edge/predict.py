"""The `predict` workflow: pick the model, stream image files through the Predictor, write rows.

Torch-free. The model is --model when given, else exports/mnist_cnn.onnx when it exists, else the
model shipped inside the package; which one is said on stderr. Inputs are files, folders (their
image files, recursively, sorted) and glob patterns. Each file gets one row (file, label,
confidence, top-k) or an error row with the reason; an unreadable file never stops the run.
Rows go to stdout and, with --output, to a .csv or .jsonl file written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .files import atomic_write
from .layout import Layout
from .runtime import FileResult, Predictor, expand_inputs, pretrained_path


@dataclass(frozen=True)
class PredictSummary:
    model: str
    total: int  # files tried
    failed: int  # files that could not be read
    output: str | None = None


def resolve_model(model: Path | None) -> tuple[Path, str]:
    """(model path, where it came from)."""
    if model is not None:
        return model, "--model"
    if Layout().onnx.is_file():
        return Layout().onnx, "exported"
    return pretrained_path(), "packaged"


def _csv_text(rows: list[FileResult], top: int) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    head = ["file", "label", "confidence"]
    for k in range(1, top + 1):
        head += [f"top{k}_label", f"top{k}_probability"]
    writer.writerow([*head, "error"])
    for r in rows:
        cells: list[Any] = [r.file, "" if r.label is None else r.label,
                            "" if r.confidence is None else f"{r.confidence:.6f}"]  # fmt: skip
        for k in range(top):
            cells += [r.top[k][0], f"{r.top[k][1]:.6f}"] if k < len(r.top) else ["", ""]
        writer.writerow([*cells, r.error or ""])
    return buf.getvalue()


def write_rows(path: Path, rows: list[FileResult], top: int) -> None:
    """Write the rows as CSV or JSON Lines (by the suffix), atomically."""
    if path.suffix == ".csv":
        text = _csv_text(rows, top)
    else:
        text = "".join(json.dumps(r.to_dict()) + "\n" for r in rows)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def predict_paths(
    items: list[str],
    *,
    model: Path | None = None,
    top: int = 1,
    threads: int | None = None,
    output: Path | None = None,
    as_json: bool = False,
    console: Any = None,
    backend: str | None = None,
    precision: str | None = None,
    profile: Path | None = None,
    workers: int | None = None,
) -> PredictSummary:
    """Classify every image the items name; print a line (or JSON) per file; write --output.
    With a deployment profile (mnist-edge tune), its model, backend, precision and threads."""
    from .. import render

    console = console or render.console
    if profile is not None:
        if model is not None or backend is not None or precision is not None:
            raise ConfigError("--profile names the model, backend and precision: drop --model, "
                              "--backend and --precision")  # fmt: skip
        predictor = Predictor.from_profile(profile, **({"threads": threads} if threads else {}))
        path, source = predictor.path, f"profile {profile}"
    else:
        path, source = resolve_model(model)
        predictor = Predictor(path, threads=threads, backend=backend, precision=precision)
    if model is None:
        render.err_console.print(f"model: {path} ({source}, {predictor.runner.name})")
    paths = expand_inputs(items)
    rows: list[FileResult] = []
    with render.file_progress(len(paths)) as advance:
        for row in predictor.predict_files(paths, top=top, workers=workers):
            rows.append(row)
            advance()
            if row.error is not None:
                render.error(row.error)
            elif not as_json:
                render.prediction(row)
    if as_json:
        console.print_json(json.dumps([r.to_dict() for r in rows if r.error is None]))
    if output is not None:
        write_rows(output, rows, top)
        render.err_console.print(f"wrote {output} ({len(rows)} rows)")
    failed = sum(r.error is not None for r in rows)
    return PredictSummary(str(path), len(rows), failed, None if output is None else str(output))
