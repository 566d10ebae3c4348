"""The command line's shared option declarations (typer), used by several commands in cli.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option
DataDir = Annotated[
    Path | None,
    Opt("--data-dir", help="Folder with MNIST/raw/*.gz (may be read-only). Default: "
        "$MNIST_EDGE_DATA, then the user cache, then a download."),
]  # fmt: skip
Threads = Annotated[int | None, Opt("--threads", help="CPU threads (default: all).")]
TestLimit = Annotated[int | None, Opt("--test-limit", help="Use only the first N test images.")]
JsonOut = Annotated[Path | None, Opt("--json", help="Also write the numbers as JSON.")]
CheckpointOpt = Annotated[Path, Opt("--checkpoint", help="Training checkpoint.")]
OutputDir = Annotated[Path, Opt("--output-dir", help="Artifact folder.")]
Atol = Annotated[float, Opt("--atol", help="Absolute tolerance per element.")]
Rtol = Annotated[float, Opt("--rtol", help="Relative tolerance per element.")]
NoParity = Annotated[bool, Opt("--no-parity", help="Skip the parity check.")]
CalibrationSize = Annotated[int, Opt("--calibration-size", help="Training images to calibrate.")]
MaxDrop = Annotated[float, Opt("--max-accuracy-drop", help="INT8 rule: points of accuracy.")]
MinAgreement = Annotated[
    float, Opt("--min-agreement", help="INT8 rule: % of answers equal to fp32's.")
]
