"""INT8 static quantization with an accuracy gate, and the ORT format for minimal builds.

Quantization uses onnxruntime.quantization: its pre-processing step (shape inference and graph
optimisation), then static quantization calibrated on training images fed through the same feed
as parity and bench (data.batches). The gate evaluates fp32 and int8 on the test set with ONNX
Runtime; an int8 model that loses more than `max_accuracy_drop` points is not marked good. The
test split and the calibration images come in as values (a command loads each split once).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .edge import layout, policy, spec
from .edge.data import Split, batches
from .edge.errors import ArtifactError, ConfigError, OutputError, reason
from .edge.files import atomic_write, save_onnx
from .edge.layout import FILENAMES, ORT_CONFIG, Layout
from .edge.metrics import TaskRule, accuracy
from .edge.runners import Runner, load_runner, outputs

INT8_NAME = FILENAMES["onnx-int8"]
ORT_NAME = FILENAMES["ort"]
ORT_CONFIG_NAME = ORT_CONFIG
FORMATS = ("qdq", "qoperator")
TYPES = ("uint8", "int8")
METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize, and the gate."""

    model: str = str(Layout().onnx)  # fp32 ONNX to quantize
    output: str = str(Layout().int8)
    calibration_size: int = policy.CALIBRATION_SIZE  # training images used for calibration
    quant_format: str = "qdq"  # "qdq" (recommended by ORT) or "qoperator"
    per_channel: bool = True  # one scale per output channel of each weight
    # 7-bit weights: u8 x s7 pair sums fit int16, so x86 CPUs without VNNI (whose u8s8 kernel
    # saturates at 32,767) compute what VNNI, ARM, the browser and onnx.reference compute
    reduce_range: bool = True
    activation_type: str = "uint8"
    weight_type: str = "int8"
    calibration_method: str = "minmax"
    max_accuracy_drop: float = policy.INT8_MAX_ACCURACY_DROP  # points (the gate and parity)
    min_argmax_agreement: float = policy.INT8_MIN_AGREEMENT  # percent answered as fp32 does
    nodes_to_exclude: tuple[str, ...] = ()  # nodes kept in fp32 (the doctor's --auto-exclude)

    def __post_init__(self) -> None:
        checks = [
            (self.calibration_size >= 1, "calibration size must be at least 1"),
            (self.quant_format in FORMATS, f"quant format must be one of {', '.join(FORMATS)}"),
            (self.activation_type in TYPES, f"activation type must be one of {', '.join(TYPES)}"),
            (self.weight_type in TYPES, f"weight type must be one of {', '.join(TYPES)}"),
            (
                self.calibration_method in METHODS,
                f"calibration must be one of {', '.join(METHODS)}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.rule  # noqa: B018  (validates the thresholds)

    @property
    def rule(self) -> TaskRule:
        """The INT8 rule, used by the gate here and by parity (via the model's metadata)."""
        return TaskRule(self.max_accuracy_drop, self.min_argmax_agreement)

    def settings(self) -> dict[str, object]:
        """The quantization choices, as recorded in metadata and manifest."""
        keys = ("quant_format", "per_channel", "reduce_range", "activation_type", "weight_type",
                "calibration_method", "calibration_size")  # fmt: skip
        return {**{k: getattr(self, k) for k in keys},
                "nodes_to_exclude": list(self.nodes_to_exclude)}  # fmt: skip


@dataclass(frozen=True)
class QuantResult:
    path: str
    bytes: int
    fp32_bytes: int
    fp32_accuracy: float  # percent, ONNX Runtime on the test set
    int8_accuracy: float
    argmax_agreement: float  # percent of test images with the same answer as fp32
    test_images: int
    max_accuracy_drop: float
    settings: dict[str, object]
    min_argmax_agreement: float = policy.INT8_MIN_AGREEMENT
    format: str = "onnx-int8"  # the INT8 file's format (onnx-int8, executorch-int8, litert-int8)

    @property
    def accuracy_drop(self) -> float:
        return self.fp32_accuracy - self.int8_accuracy

    @property
    def size_ratio(self) -> float:
        return self.bytes / self.fp32_bytes

    @property
    def passed(self) -> bool:
        rule = TaskRule(self.max_accuracy_drop, self.min_argmax_agreement)
        return rule.passes(self.fp32_accuracy, self.int8_accuracy, self.argmax_agreement)

    def problem(self) -> str | None:
        """One sentence when the gate failed, else None."""
        if self.passed:
            return None
        return (
            f"INT8 gate FAILED: accuracy dropped {self.accuracy_drop:.2f} points (limit "
            f"{self.max_accuracy_drop:g}), argmax agreement {self.argmax_agreement:.2f}% (minimum "
            f"{self.min_argmax_agreement:g}%); {self.path} is not marked good in the manifest"
        )

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "accuracy_drop": self.accuracy_drop,
                "size_ratio": self.size_ratio, "passed": self.passed}  # fmt: skip


class _Feed:
    """onnxruntime's CalibrationDataReader contract: get_next() -> feed dict, None when done."""

    def __init__(self, input_name: str, batches: Iterator[np.ndarray]) -> None:
        self.input_name, self._batches = input_name, batches

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}


def calibration_images(cfg: QuantConfig, train: Split) -> np.ndarray:
    """A seeded, class-mixed sample of the training images, uint8 (N, 28, 28)."""
    if cfg.calibration_size > len(train):
        raise ConfigError(
            f"calibration size {cfg.calibration_size} exceeds the {len(train)} training images"
        )
    pick = np.random.default_rng(0).choice(len(train), cfg.calibration_size, replace=False)
    return train.images[np.sort(pick)]


@contextmanager
def _scratch(folder: str) -> Iterator[None]:
    """The quantizer's own files (pre-processed model, calibration cache) go to a temporary
    folder: a failure to write there is said as such, with the folder."""
    try:
        yield
    except OSError as exc:
        raise OutputError(f"cannot write the quantizer's temporary files in {Path(folder).parent}: "
                          f"{reason(exc)}") from exc  # fmt: skip


def quantize_model(cfg: QuantConfig, calibration: np.ndarray) -> Path:
    """Write the int8 model to cfg.output (atomically) and return its path."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = layout.require(cfg.model, "onnx")
    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}  # fmt: skip
    fp32 = onnx.load(str(src))
    with tempfile.TemporaryDirectory() as tmp, _scratch(tmp):
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(src), str(pre))
        quantize_static(
            str(pre),
            str(out),
            _Feed(spec.INPUT_NAME, batches(calibration, policy.BATCH)),
            quant_format=QuantFormat.QDQ if cfg.quant_format == "qdq" else QuantFormat.QOperator,
            per_channel=cfg.per_channel,
            reduce_range=cfg.reduce_range,
            activation_type=qtype[cfg.activation_type],
            weight_type=qtype[cfg.weight_type],
            calibrate_method=method[cfg.calibration_method],
            nodes_to_exclude=list(cfg.nodes_to_exclude),
            calibration_cache_path=str(Path(tmp) / "calib.cache"),
        )
        model = onnx.load(str(out))
    meta = {p.key: p.value for p in fp32.metadata_props}
    meta[spec.METADATA_PREFIX + "format"] = "onnx-int8"
    meta.update({f"{spec.METADATA_PREFIX}int8.{k}": json.dumps(v) if isinstance(v, list) else str(v)
                 for k, v in cfg.settings().items()})  # fmt: skip
    meta.update(cfg.rule.to_metadata())
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    save_onnx(model, cfg.output)
    return Path(cfg.output)


def quantize(cfg: QuantConfig, test: Split, calibration: np.ndarray) -> QuantResult:
    """Quantize on `calibration` (uint8 (N, 28, 28) images: calibration_images), then gate:
    fp32 and int8 in ONNX Runtime on `test`, judged by cfg.rule."""
    fp32 = load_runner(cfg.model, fmt="onnx")
    out = quantize_model(cfg, calibration)
    return gate(fp32, out, test, cfg, cfg.settings())


def gate(fp32: Runner | Path | str, int8: Path | str, test: Split, cfg: QuantConfig,
         settings: dict[str, object]) -> QuantResult:  # fmt: skip
    """The INT8 gate, the same for every format: the fp32 file and its INT8 version, each in its
    own runtime, on `test`, judged by cfg.rule (accuracy drop, argmax agreement)."""
    fp32 = fp32 if isinstance(fp32, Runner) else load_runner(fp32)
    int8_runner = load_runner(int8)
    fp32_pred = outputs(fp32, test.images).argmax(1)
    int8_pred = outputs(int8_runner, test.images).argmax(1)
    return QuantResult(
        path=str(int8),
        bytes=Path(int8).stat().st_size,
        fp32_bytes=Path(fp32.path).stat().st_size,
        fp32_accuracy=accuracy(fp32_pred, test.labels),
        int8_accuracy=accuracy(int8_pred, test.labels),
        argmax_agreement=accuracy(int8_pred, fp32_pred),
        test_images=len(test.labels),
        max_accuracy_drop=cfg.max_accuracy_drop,
        settings=settings,
        min_argmax_agreement=cfg.min_argmax_agreement,
        format=int8_runner.format,
    )


def convert_to_ort(
    model: Path | str, output_dir: Path | str, platform: str = "amd64"
) -> tuple[Path, Path]:
    """ONNX -> ORT format (+ its required-operators config) for minimal/mobile ORT builds, its
    fixed optimisations made for `platform` ("amd64", or "arm" for ARM devices)."""
    model, output_dir = layout.require(model, "onnx"), Path(output_dir)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "in" / (Path(ORT_NAME).stem + ".onnx")
        staged.parent.mkdir()
        shutil.copyfile(model, staged)
        cmd = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(staged),
               "--output_dir", str(Path(tmp) / "out"), "--optimization_style", "Fixed",
               "--target_platform", platform]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        produced = Path(tmp) / "out" / ORT_NAME
        if proc.returncode != 0 or not produced.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ArtifactError(f"ORT conversion of {model} failed: {tail[0][:200]}")
        folder = Layout(output_dir)
        ort_path, config_path = folder.ort, folder.ort_config
        # the converter names the file it read, by its temporary path: name the file alone
        text = (Path(tmp) / "out" / ORT_CONFIG_NAME).read_text()
        text = text.replace(str(produced), ORT_NAME)
        atomic_write(config_path, lambda t: t.write_text(text))
        atomic_write(ort_path, lambda t: shutil.copyfile(produced, t))
    return ort_path, config_path
