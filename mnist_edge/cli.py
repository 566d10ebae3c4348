"""The `mnist-edge` command line: parse flags, build a config, call one library function, render.

Heavy modules (torch, onnx) are imported inside the commands that need them, so that
`mnist-edge --help` is fast and works on an edge install without torch.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import MnistEdgeError

app = typer.Typer(
    name="mnist-edge",
    help="Train, export, verify and run the MNIST CNN on edge CPUs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Wide tables stay readable in logs and CI (no terminal: rich would assume 80 columns).
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])
EXIT_ERROR = 2  # a user mistake or missing input; 1 is kept for "checked and failed"

DEFAULT_DIR = Path("exports")
DEFAULT_CHECKPOINT = DEFAULT_DIR / "mnist_cnn.pt"

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder with MNIST/raw/*.gz (may be read-only). Default: $MNIST_EDGE_DATA, "
        "then the user cache, then a download.",
    ),
]
Threads = Annotated[int | None, typer.Option("--threads", help="CPU threads (default: all).")]
TestLimit = Annotated[
    int | None, typer.Option("--test-limit", help="Use only the first N test images.")
]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the numbers as JSON.")]
CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", help="Training checkpoint.")]


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    """Print one red line on stderr and return the Exit to raise."""
    err_console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Turn library errors into one red line and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MnistEdgeError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None

    return wrapper  # type: ignore[return-value]


def _opt(path: Path | None) -> str | None:
    return None if path is None else str(path)


@app.command("train")
@handle_errors
def train_cmd(
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the data.")] = 10,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "--batch_size", help="Images per step.")
    ] = 64,
    learning_rate: Annotated[
        float, typer.Option("--learning-rate", "--learning_rate", help="Adam learning rate.")
    ] = 1e-3,
    seed: Annotated[int, typer.Option("--seed", help="Seed for weights and shuffling.")] = 1,
    data_dir: DataDir = None,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", help="Where mnist_cnn.pt is written.")
    ] = DEFAULT_DIR,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Train on the first N images only.")
    ] = None,
    test_limit: TestLimit = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue OUTPUT_DIR/mnist_cnn.pt to --epochs.")
    ] = False,
    threads: Threads = None,
    lr_schedule: Annotated[
        str, typer.Option("--lr-schedule", help="constant (original) or cosine.")
    ] = "constant",
    augment: Annotated[
        bool, typer.Option("--augment/--no-augment", help="Random shifts up to 2 px.")
    ] = False,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="Adam L2 penalty.")] = 0.0,
    device: Annotated[
        str, typer.Option("--device", help="auto (accelerator if present), cpu, cuda, mps.")
    ] = "auto",
    amp: Annotated[bool, typer.Option("--amp", help="Mixed precision on CUDA.")] = False,
) -> None:
    """Train the CNN on MNIST and write a checkpoint after every epoch."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from .train import TrainConfig, train

    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        limit=limit,
        test_limit=test_limit,
        threads=threads,
        data_dir=_opt(data_dir),
        output_dir=str(output_dir),
        lr_schedule=lr_schedule,
        augment=augment,
        weight_decay=weight_decay,
        device=device,
        amp=amp,
    )
    columns = (
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.0f} img/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        tasks: dict[int, Any] = {}

        def on_step(s: Any) -> None:
            if s.epoch not in tasks:
                tasks[s.epoch] = progress.add_task(
                    "", total=s.steps, epoch=f"{s.epoch}/{cfg.epochs}", loss=0.0, rate=0.0
                )
            progress.update(tasks[s.epoch], completed=s.step, loss=s.loss, rate=s.images_per_s)

        def on_epoch(m: Any) -> None:
            if m.epoch in tasks:
                progress.remove_task(tasks[m.epoch])
            progress.console.print(
                f"epoch {m.epoch}/{cfg.epochs}  train loss {m.train_loss:.4f}  "
                f"test loss {m.test_loss:.4f}  test accuracy {m.test_accuracy:.2f}%  "
                f"({m.images_per_s:.0f} img/s, {m.seconds:.0f} s)"
            )

        result = train(cfg, resume=resume, on_step=on_step, on_epoch=on_epoch)
    if not result.is_main:
        return  # other ranks of a torchrun job stay quiet
    console.print(
        f"checkpoint {result.checkpoint}  test accuracy {result.test_accuracy:.2f}%"
        + (
            f"  (resumed after epoch {result.resumed_from_epoch})"
            if result.resumed_from_epoch
            else ""
        )
    )


@app.command("evaluate")
@handle_errors
def evaluate_cmd(
    checkpoint: CheckpointOpt = DEFAULT_CHECKPOINT,
    data_dir: DataDir = None,
    test_limit: TestLimit = None,
    threads: Threads = None,
    json_path: JsonOut = None,
) -> None:
    """Test loss, accuracy, per-class accuracy and confusion matrix of a checkpoint."""
    from .files import write_json
    from .train import evaluate

    r = evaluate(checkpoint, data_dir=_opt(data_dir), test_limit=test_limit, threads=threads)
    correct = sum(r.confusion[i][i] for i in range(len(r.confusion)))
    console.print(f"test loss {r.loss:.4f}")
    console.print(f"accuracy {r.accuracy:.2f}% ({correct}/{r.n} test images)")
    matrix = Table(
        title="confusion matrix (rows: true digit, columns: predicted)", box=box.SIMPLE_HEAD
    )
    matrix.add_column("true", justify="right")
    for digit in range(len(r.confusion)):
        matrix.add_column(str(digit), justify="right")
    matrix.add_column("accuracy %", justify="right")
    for digit, row in enumerate(r.confusion):
        acc = r.per_class_accuracy[digit]
        matrix.add_row(str(digit), *(str(v) for v in row), f"{acc:.2f}")
    console.print(matrix)
    if json_path:
        write_json(json_path, r.to_dict())
        console.print(f"wrote {json_path}")


Atol = Annotated[float, typer.Option("--atol", help="Absolute tolerance per element.")]
Rtol = Annotated[float, typer.Option("--rtol", help="Relative tolerance per element.")]


def _fmt(value: float | None, spec: str = ".2e") -> str:
    return "-" if value is None else format(value, spec)


def render_parity(report: Any) -> None:
    """One table per artifact, then the verdict."""
    for art in report.artifacts:
        verdict = "[green]PASS[/green]" if art.passed else "[red]FAIL[/red]"
        if art.judge == "task":
            verdict += " (judged on argmax agreement and accuracy drop)"
        table = Table(
            title=f"{art.path} ({art.format}) {verdict}", title_justify="left", box=box.SIMPLE_HEAD
        )
        for col in (
            "inputs",
            "n",
            "max |d|",
            "p99 |d|",
            "max rel",
            "min atol",
            "argmax %",
            "acc %",
        ):
            table.add_column(col, justify="left" if col == "inputs" else "right")
        table.add_column("ok")
        for g in art.groups:
            table.add_row(
                g.name,
                str(g.n),
                _fmt(g.max_abs_diff),
                _fmt(g.p99_abs_diff),
                _fmt(g.max_rel_diff),
                _fmt(g.min_atol),
                f"{g.argmax_agreement:.2f}",
                _fmt(g.candidate_accuracy, ".2f"),
                "yes" if art.group_ok(g) else "[red]NO[/red]",
            )
        console.print(table)
    console.print(
        f"tolerances: atol {report.atol:g}, rtol {report.rtol:g} (an element passes within either)"
    )


def finish_parity(report: Any, json_path: Path | None, gate: Any = None) -> None:
    """Render the report, write --json, then exit 1 naming what failed (parity or the INT8
    gate), if anything."""
    from .files import write_json

    if report is not None:
        render_parity(report)
    if json_path:
        body = report.to_dict() if report is not None else {}
        if gate is not None:
            body["int8_gate"] = gate.to_dict()
        write_json(json_path, body)
        console.print(f"wrote {json_path}")
    failed = [a.path for a in report.artifacts if not a.passed] if report is not None else []
    problems = [f"parity FAILED for {', '.join(failed)}"] if failed else []
    if gate is not None and not gate.passed:
        problems.append(
            f"INT8 gate FAILED: accuracy dropped {gate.accuracy_drop:.2f} points "
            f"(limit {gate.max_accuracy_drop:g}); {gate.path} is not marked good in the manifest"
        )
    if problems:
        raise fail("; ".join(problems), code=1)
    if report is not None:
        console.print(f"[green]parity passed[/green] for {len(report.artifacts)} artifact(s)")


@app.command("export")
@handle_errors
def export_cmd(
    format: Annotated[
        str, typer.Option("--format", help="onnx, torchscript, pt2, or all (comma-separated ok).")
    ] = "onnx",
    checkpoint: CheckpointOpt = DEFAULT_CHECKPOINT,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", help="Artifact folder.")
    ] = DEFAULT_DIR,
    opset: Annotated[int | None, typer.Option("--opset", help="ONNX opset.")] = None,
    no_parity: Annotated[bool, typer.Option("--no-parity", help="Skip the parity check.")] = False,
    data_dir: DataDir = None,
    test_limit: TestLimit = None,
    atol: Atol = 1e-4,
    rtol: Rtol = 1e-3,
    json_path: JsonOut = None,
    quantize: Annotated[
        str | None, typer.Option("--quantize", help="Also write an INT8 model: int8.")
    ] = None,
    calibration_size: Annotated[
        int, typer.Option("--calibration-size", help="Training images for INT8 calibration.")
    ] = 512,
    max_accuracy_drop: Annotated[
        float, typer.Option("--max-accuracy-drop", help="INT8 gate, percentage points.")
    ] = 0.2,
) -> None:
    """Export the checkpoint, then check the exports against PyTorch (parity)."""
    from .export import FORMATS, ExportConfig, export, record_parity
    from .parity import check_checkpoint
    from .quantize import QuantConfig

    names = [f.strip() for f in format.split(",") if f.strip()]
    formats = FORMATS if names == ["all"] else tuple(names)
    cfg = ExportConfig(
        checkpoint=str(checkpoint), output_dir=str(output_dir), formats=formats, opset=opset
    )
    if quantize not in (None, "int8"):
        raise fail(f"--quantize takes int8, got {quantize!r}")
    qcfg = None
    if quantize:
        if "onnx" not in cfg.formats:
            raise fail("--quantize int8 needs --format onnx (or all): INT8 is made from the ONNX")
        qcfg = QuantConfig(
            model=str(output_dir / "mnist_cnn.onnx"),
            output=str(output_dir / "mnist_cnn.int8.onnx"),
            calibration_size=calibration_size,
            max_accuracy_drop=max_accuracy_drop,
            data_dir=_opt(data_dir),
        )
    artifacts = export(cfg)
    for art in artifacts:
        console.print(f"wrote {output_dir / art.file}  ({art.format}, {art.bytes:,} bytes)")
    gate = None
    if qcfg is not None:
        art, gate = quantize_and_register(qcfg, output_dir, checkpoint)
        artifacts.append(art)
    if no_parity:
        console.print("parity skipped (--no-parity); run `mnist-edge parity` to check")
        finish_parity(None, None, gate)
        return
    report = check_checkpoint(
        checkpoint,
        [(art.path(output_dir), art.format) for art in artifacts],
        data_dir=_opt(data_dir),
        test_limit=test_limit,
        atol=atol,
        rtol=rtol,
    )
    record_parity(output_dir, report.artifacts)
    finish_parity(report, json_path, gate)


def quantize_and_register(qcfg: Any, output_dir: Path, checkpoint: Path) -> tuple[Any, Any]:
    """Quantize, render the gate, add the model to the manifest (not good if the gate failed)."""
    from .export import register
    from .quantize import quantize

    with console.status("quantizing to INT8 and evaluating fp32 and int8 on the test set"):
        gate = quantize(qcfg)
    art = register(
        output_dir,
        Path(gate.path),
        "onnx-int8",
        str(checkpoint),
        extra={"gate": gate.to_dict(), "quantization": gate.settings},
    )
    render_gate(gate)
    return art, gate


def render_gate(gate: Any) -> None:
    verdict = "[green]passed[/green]" if gate.passed else "[red]FAILED[/red]"
    console.print(
        f"wrote {gate.path}  (onnx-int8, {gate.bytes:,} bytes, {gate.size_ratio:.2f}x fp32)\n"
        f"INT8 gate {verdict}: accuracy fp32 {gate.fp32_accuracy:.2f}% -> int8 "
        f"{gate.int8_accuracy:.2f}% (drop {gate.accuracy_drop:+.2f} points, limit "
        f"{gate.max_accuracy_drop:g}), argmax agreement {gate.argmax_agreement:.2f}% on "
        f"{gate.test_images} test images"
    )


@app.command("quantize")
@handle_errors
def quantize_cmd(
    model: Annotated[Path, typer.Option("--model", help="fp32 ONNX model.")] = DEFAULT_DIR
    / "mnist_cnn.onnx",
    output: Annotated[
        Path | None, typer.Option("--output", help="Default: mnist_cnn.int8.onnx beside --model.")
    ] = None,
    checkpoint: CheckpointOpt = DEFAULT_CHECKPOINT,
    calibration_size: Annotated[
        int, typer.Option("--calibration-size", help="Training images for calibration.")
    ] = 512,
    max_accuracy_drop: Annotated[
        float, typer.Option("--max-accuracy-drop", help="Gate, percentage points.")
    ] = 0.2,
    quant_format: Annotated[str, typer.Option("--quant-format", help="qdq or qoperator.")] = "qdq",
    per_channel: Annotated[
        bool, typer.Option("--per-channel/--per-tensor", help="Weight scales.")
    ] = True,
    reduce_range: Annotated[bool, typer.Option("--reduce-range", help="7-bit weights.")] = False,
    activation_type: Annotated[
        str, typer.Option("--activation-type", help="uint8 or int8.")
    ] = "uint8",
    weight_type: Annotated[str, typer.Option("--weight-type", help="int8 or uint8.")] = "int8",
    calibration_method: Annotated[
        str, typer.Option("--calibration-method", help="minmax, entropy or percentile.")
    ] = "minmax",
    no_parity: Annotated[bool, typer.Option("--no-parity", help="Skip the parity check.")] = False,
    data_dir: DataDir = None,
    test_limit: TestLimit = None,
    json_path: JsonOut = None,
) -> None:
    """INT8 static quantization with an accuracy gate; exit 1 when the gate fails."""
    from .export import record_parity
    from .parity import check_checkpoint
    from .quantize import QuantConfig

    qcfg = QuantConfig(
        model=str(model),
        output=str(output or model.with_name("mnist_cnn.int8.onnx")),
        calibration_size=calibration_size,
        max_accuracy_drop=max_accuracy_drop,
        quant_format=quant_format,
        per_channel=per_channel,
        reduce_range=reduce_range,
        activation_type=activation_type,
        weight_type=weight_type,
        calibration_method=calibration_method,
        data_dir=_opt(data_dir),
        test_limit=test_limit,
    )
    out_dir = Path(qcfg.output).parent
    art, gate = quantize_and_register(qcfg, out_dir, checkpoint)
    if no_parity:
        finish_parity(None, json_path, gate)
        return
    report = check_checkpoint(
        checkpoint,
        [(art.path(out_dir), art.format)],
        data_dir=_opt(data_dir),
        test_limit=test_limit,
    )
    record_parity(out_dir, report.artifacts)
    finish_parity(report, json_path, gate)


@app.command("parity")
@handle_errors
def parity_cmd(
    artifacts: Annotated[
        list[Path] | None, typer.Argument(help="Exported files (default: the manifest's).")
    ] = None,
    checkpoint: CheckpointOpt = DEFAULT_CHECKPOINT,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", help="Folder of manifest.json.")
    ] = DEFAULT_DIR,
    data_dir: DataDir = None,
    test_limit: TestLimit = None,
    atol: Atol = 1e-4,
    rtol: Rtol = 1e-3,
    json_path: JsonOut = None,
) -> None:
    """Compare exported models with the checkpoint's PyTorch model; exit 1 on a mismatch."""
    from .export import manifest_artifacts, record_parity
    from .parity import check_checkpoint, guess_format

    if artifacts:
        targets = [(Path(p), guess_format(p)) for p in artifacts]
    else:
        targets = [(a.path(output_dir), a.format) for a in manifest_artifacts(output_dir)]
    report = check_checkpoint(
        checkpoint, targets, data_dir=_opt(data_dir), test_limit=test_limit, atol=atol, rtol=rtol
    )
    if not artifacts:
        record_parity(output_dir, report.artifacts)
    finish_parity(report, json_path)


DEFAULT_MODEL = DEFAULT_DIR / "mnist_cnn.onnx"


@app.command("predict")
@handle_errors
def predict_cmd(
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG, ...).")],
    model: Annotated[Path, typer.Option("--model", help="ONNX model.")] = DEFAULT_MODEL,
    top: Annotated[int, typer.Option("--top", min=1, max=10, help="Show the K best.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
    threads: Threads = None,
) -> None:
    """Classify digit images: one line per file with the label and its confidence."""
    import json

    from .errors import InputError
    from .runtime import Predictor

    predictor = Predictor(model, threads=threads)
    rows, failed = [], 0
    for path in images:
        try:
            best = predictor.predict_image(path).top(top)[0]
        except InputError as exc:
            failed += 1
            err_console.print(f"[red]error:[/red] {escape(str(exc))}")
            continue
        rows.append({"file": str(path), "label": best[0][0], "confidence": best[0][1],
                     "top": [{"label": c, "probability": p} for c, p in best]})  # fmt: skip
        if not as_json:
            others = "  ".join(f"{c} {p:.1%}" for c, p in best[1:])
            console.print(
                f"{path}  {best[0][0]}  {best[0][1]:.1%}" + (f"  ({others})" if others else "")
            )
    if as_json:
        console.print_json(json.dumps(rows))
    if failed:
        raise typer.Exit(EXIT_ERROR)


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise fail(f"{flag} takes comma-separated integers, got {text!r}") from None


@app.command("bench")
@handle_errors
def bench_cmd(
    backends: Annotated[
        str | None,
        typer.Option(
            "--backends",
            help="Comma-separated from pytorch, torchscript, onnxruntime, onnxruntime-int8, "
            "onnxruntime-ort (default: the first three, plus int8/ort when their files exist).",
        ),
    ] = None,
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="e.g. 1,8,64")] = "1,8,64",
    threads: Annotated[
        str | None, typer.Option("--threads", help="e.g. 1,2 (default: 1 and all cores)")
    ] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed calls per case.")] = 10,
    iterations: Annotated[
        int | None, typer.Option("--iterations", help="Timed calls per case.")
    ] = None,
    duration: Annotated[
        float, typer.Option("--duration", help="Seconds per case (without --iterations).")
    ] = 2.0,
    model: Annotated[Path, typer.Option("--model", help="ONNX model.")] = DEFAULT_MODEL,
    checkpoint: CheckpointOpt = DEFAULT_CHECKPOINT,
    torchscript: Annotated[
        Path | None, typer.Option("--torchscript", help="Default: beside --model.")
    ] = None,
    data_dir: DataDir = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Default: benchmarks/results/bench-TIME.json")
    ] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Latency plot (PNG).")] = None,
    compare: Annotated[
        Path | None, typer.Option("--compare", help="Baseline bench JSON to compare with.")
    ] = None,
    max_regression: Annotated[
        float, typer.Option("--max-regression", help="Allowed worsening in percent.")
    ] = 20.0,
) -> None:
    """Latency and throughput of PyTorch, TorchScript and ONNX Runtime, side by side."""
    import os
    import time

    from . import bench
    from .files import write_json

    int8_model, ort_model = model.with_name("mnist_cnn.int8.onnx"), model.with_name("mnist_cnn.ort")
    if backends:
        chosen = tuple(b.strip() for b in backends.split(",") if b.strip())
    else:
        optional = {"onnxruntime-int8": int8_model, "onnxruntime-ort": ort_model}
        chosen = bench.DEFAULT_BACKENDS + tuple(b for b, p in optional.items() if p.is_file())
    cfg = bench.BenchConfig(
        backends=chosen,
        int8_model=str(int8_model),
        ort_model=str(ort_model),
        batch_sizes=_ints(batch_sizes, "--batch-sizes"),
        threads=_ints(threads, "--threads") if threads else (1, os.cpu_count() or 1),
        warmup=warmup,
        iterations=iterations,
        duration=duration,
        model=str(model),
        torchscript=str(torchscript or model.with_name("mnist_cnn.torchscript.pt")),
        checkpoint=str(checkpoint),
        data_dir=_opt(data_dir),
    )
    baseline = bench.load_baseline(compare) if compare else None
    report = bench.bench(cfg)
    render_bench(report)
    path = json_path or Path("benchmarks/results") / time.strftime("bench-%Y%m%d-%H%M%S.json")
    write_json(path, report.to_dict())
    console.print(f"wrote {path}")
    if plot:
        bench.plot(report, plot)
        console.print(f"wrote {plot}")
    if baseline is not None:
        found = bench.compare_to_baseline(report.to_dict(), baseline, max_regression)
        for r in found:
            err_console.print(
                f"[red]regression:[/red] {r.backend} batch {r.batch_size} threads {r.threads} "
                f"{r.metric} {r.baseline:.3f} -> {r.current:.3f} ({r.change_pct:+.1f}% worse)"
            )
        if found:
            raise fail(
                f"{len(found)} regression(s) beyond {max_regression:g}% against {compare}", 1
            )
        console.print(f"no regression beyond {max_regression:g}% against {compare}")


def render_bench(report: Any) -> None:
    env = report.environment
    console.print(
        f"{env['cpu']}, {env['cores']} cores ({', '.join(env['cpu_flags'])}); "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if k != "mnist-edge")
    )
    rates = ", ".join(f"{t} thread(s) {g:.1f}" for t, g in report.matmul_gflops.items())
    console.print(f"fp32 matmul roofline (GFLOP/s): {rates}")
    table = Table(title="latency (ms) and throughput", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("backend", "batch", "thr", "p50", "p99", "mean", "img/s", "cold", "GFLOP/s",
                "roof", "vs eager"):  # fmt: skip
        table.add_column(col, justify="left" if col == "backend" else "right")
    for c in report.cases:
        table.add_row(
            c.backend, str(c.batch_size), str(c.threads), f"{c.p50_ms:.3f}", f"{c.p99_ms:.3f}",
            f"{c.mean_ms:.3f}", f"{c.throughput:.0f}", f"{c.cold_start_ms:.0f}", f"{c.gflops:.1f}",
            f"{c.roofline_fraction:.0%}", _fmt(c.p50_vs_eager, ".2f"),
        )  # fmt: skip
    console.print(table)
    for o in report.overhead:
        console.print(
            f"Predictor.predict overhead, batch {o.batch_size}, {o.threads} thread(s): "
            f"{o.predict_p50_ms:.3f} ms vs session.run {o.session_run_p50_ms:.3f} ms "
            f"({o.overhead_pct:+.1f}%)"
        )


def main() -> None:
    """Console-script entry point."""
    app()
