"""The workflows a user runs, as library calls: export -> INT8 -> parity -> manifest verdicts.

The CLI is a thin layer over these: a Python caller gets the same checks, the same manifest
entries and the same verdict (`ExportRun.problems()`) as `mnist-edge export`, `quantize` and
`parity` do. Parity verdicts go into the manifest only when the reference is a training
checkpoint (parity against another artifact proves agreement, not fidelity to PyTorch). The
MNIST splits come in as values: a command loads each once (`Data`) and every check it runs
(the INT8 gate, its doctor, parity) judges on the same arrays.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .edge import manifest, phases
from .edge.data import Split, load_split
from .edge.layout import QUANTIZABLE, Layout, format_of
from .edge.manifest import Artifact
from .edge.parity import ParityReport, VerifyConfig, check_loaded, load_all

if TYPE_CHECKING:
    from .export import ExportConfig
    from .quantize import QuantConfig, QuantResult


@dataclass
class Data:
    """The MNIST a command judges on, each split read from disk once, when first needed (a
    command that checks nothing never looks for MNIST): the test split's first `test_limit`
    images, and the whole training split (INT8 calibration)."""

    data_dir: str | None = None
    test_limit: int | None = None

    @cached_property
    def test(self) -> Split:
        split = load_split("test", self.data_dir, self.test_limit)
        phases.mark("data")
        return split

    @cached_property
    def train(self) -> Split:
        return load_split("train", self.data_dir)

    def calibration(self, cfg: QuantConfig) -> Any:
        from .quantize import calibration_images

        return calibration_images(cfg, self.train)


@dataclass
class ExportRun:
    """What a workflow wrote and what the checks said."""

    output_dir: Path | None
    artifacts: list[Artifact] = field(default_factory=list)
    parity: ParityReport | None = None
    gates: list[QuantResult] = field(default_factory=list)  # one INT8 gate per INT8 file made
    diagnosis: Any = None  # doctor.Diagnosis, when the quantization doctor ran

    @property
    def gate(self) -> QuantResult | None:
        """The first INT8 gate (the ONNX one, when ONNX was quantized)."""
        return self.gates[0] if self.gates else None

    def problems(self) -> list[str]:
        """One sentence per failed check; empty when everything passed."""
        found = []
        if self.parity is not None and (failed := self.parity.failed()):
            ref = self.parity.checkpoint
            flag = "--checkpoint" if format_of(ref) == "checkpoint" else "--reference"
            found.append(
                f"parity FAILED for {', '.join(failed)}; to see where, run: mnist-edge parity "
                f"--layers {' '.join(failed)} {flag} {ref}"
            )
        found += [problem for g in self.gates if (problem := g.problem())]
        return found

    def __bool__(self) -> bool:
        return not self.problems()

    def to_dict(self) -> dict[str, Any]:
        """The --json report: the parity report, plus the INT8 gate when there is one."""
        body: dict[str, Any] = self.parity.to_dict() if self.parity is not None else {}
        if self.gate is not None:
            body["int8_gate"] = self.gate.to_dict()
            body["int8_gates"] = {g.format: g.to_dict() for g in self.gates}
        if self.diagnosis is not None:
            body["int8_doctor"] = self.diagnosis.to_dict()
        return body


def verify(targets: list[Path], cfg: VerifyConfig, data: Data) -> ParityReport:
    """Parity of `targets` against cfg.reference on data.test (the files are loaded first: a
    bad one is named before MNIST is looked for); verdicts recorded in the targets' manifests
    when the reference is a checkpoint (and no other backend or precision was asked for)."""
    if cfg.reference is None:
        raise ValueError("verify needs a reference")
    candidates, ref = load_all(cfg.reference, list(targets), threads=cfg.threads,
                               backend=cfg.backend, precision=cfg.precision)  # fmt: skip
    test = data.test
    phases.mark("parity")
    report = check_loaded(ref, candidates, test, atol=cfg.atol, rtol=cfg.rtol,
                          reference_name=str(cfg.reference))  # fmt: skip
    # a verdict is the file's own when its format's backend ran it at its own precision
    if format_of(cfg.reference) == "checkpoint" and cfg.backend is cfg.precision is None:
        folders = {Path(p).parent for p in targets}
        for folder in folders:
            if manifest.read(folder)["artifacts"]:
                manifest.record_parity(folder, report.verdicts())
    return report


def _quantize_and_register(
    qcfg: QuantConfig, checkpoint: str | Path, data: Data, *, doctor: bool = False,
    auto_exclude: bool = False,
) -> tuple[Artifact, Any, Any]:  # fmt: skip
    """Quantize (with the doctor's diagnosis and auto-exclusion, when asked), register."""
    from .quantize import quantize  # onnxruntime.quantization and onnx: heavy

    diagnosis = None
    test, calibration = data.test, data.calibration(qcfg)
    if doctor or auto_exclude:
        from .doctor import quantize_with_doctor

        gate, diagnosis = quantize_with_doctor(qcfg, test, calibration, auto_exclude=auto_exclude)
    else:
        gate = quantize(qcfg, test, calibration)
    phases.mark("quantized")
    extra = {"gate": gate.to_dict(), "quantization": {**gate.settings, **asdict(qcfg.rule)}}
    if diagnosis is not None:
        extra["doctor"] = diagnosis.to_dict()
    art = manifest.register(Path(gate.path).parent, Path(gate.path), "onnx-int8", checkpoint,
                            extra=extra)  # fmt: skip
    return art, gate, diagnosis


def _quantize_format(fmt: str, qcfg: QuantConfig, cfg: ExportConfig,
                     data: Data) -> tuple[Artifact, QuantResult]:  # fmt: skip
    """The INT8 version of an exported ExecuTorch or LiteRT file: written from the checkpoint,
    calibrated on the same training images as ONNX, gated by the same rule against its own fp32
    file, registered."""
    from .export import write_int8
    from .quantize import gate

    out = Path(cfg.output_dir)
    path, settings = write_int8(fmt, cfg.checkpoint, out, data.calibration(qcfg), qcfg.rule)
    result = gate(Layout(out).artifact(fmt), path, data.test, qcfg, settings)
    phases.mark("quantized")
    extra = {"gate": result.to_dict(), "quantization": {**settings, **asdict(qcfg.rule)}}
    art = manifest.register(out, path, result.format, cfg.checkpoint, extra=extra)
    return art, result


def export_and_verify(
    cfg: ExportConfig, *, quant: QuantConfig | None = None, check: VerifyConfig | None = None,
    data: Data | None = None,
) -> ExportRun:  # fmt: skip
    """Export the formats of `cfg`, optionally quantize the ONNX, then check everything written
    against the checkpoint (unless `check` is None) and record the verdicts, on `data`."""
    from .export import export  # torch: heavy

    data = data or Data()
    if check is not None or quant is not None:
        data.test  # noqa: B018  (a missing MNIST is said before minutes of exporting)
    run = ExportRun(Path(cfg.output_dir), export(cfg))
    phases.mark("exported")
    for fmt in () if quant is None else [f for f in QUANTIZABLE if f in cfg.formats]:
        if fmt == "onnx":
            art, gate, _ = _quantize_and_register(quant, cfg.checkpoint, data)
        else:
            art, gate = _quantize_format(fmt, quant, cfg, data)
        run.artifacts.append(art)
        run.gates.append(gate)
    if check is not None:
        ref = VerifyConfig(**{**check.__dict__, "reference": check.reference or cfg.checkpoint})
        run.parity = verify([a.path(cfg.output_dir) for a in run.artifacts], ref, data)
    return run


def quantize_and_verify(
    cfg: QuantConfig,
    *,
    checkpoint: str | Path,
    check: VerifyConfig | None = None,
    doctor: bool = True,
    auto_exclude: bool = False,
    data: Data | None = None,
) -> ExportRun:
    """Quantize an exported ONNX with the gate and the doctor's per-layer diagnosis (and, with
    auto_exclude, fp32 layers until the gate passes), register it, check it against
    `checkpoint`; every step on the same `data`."""
    data = data or Data()
    art, gate, diagnosis = _quantize_and_register(cfg, checkpoint, data, doctor=doctor,
                                                  auto_exclude=auto_exclude)  # fmt: skip
    run = ExportRun(Path(cfg.output).parent, [art], gates=[gate], diagnosis=diagnosis)
    if check is not None:
        ref = VerifyConfig(**{**check.__dict__, "reference": check.reference or str(checkpoint)})
        run.parity = verify([art.path(run.output_dir)], ref, data)
    return run


def parity(artifacts: list[Path] | None, output_dir: Path, cfg: VerifyConfig,
           data: Data | None = None) -> ExportRun:  # fmt: skip
    """Check the named artifacts, or every artifact in OUTPUT_DIR's manifest."""
    targets = artifacts or [a.path(output_dir) for a in manifest.artifacts(output_dir)]
    return ExportRun(output_dir, parity=verify(targets, cfg, data or Data()))


def layerwise(
    artifacts: list[Path] | None, output_dir: Path, cfg: VerifyConfig, *, min_sqnr_db: float,
    data: Data | None = None,
) -> Any:  # fmt: skip
    """Layer-by-layer parity of the named artifacts, or of every artifact in the manifest: the
    files loaded first (a bad one is named before MNIST is looked for), then compared."""
    from .layers import compare_taps, load_taps  # onnx: heavy

    targets = artifacts or [a.path(output_dir) for a in manifest.artifacts(output_dir)]
    taps, ref = load_taps(cfg, list(targets), min_sqnr_db)
    return compare_taps(cfg, ref, taps, (data or Data()).test, min_sqnr_db=min_sqnr_db)
