"""The `mnist-edge` command line: parse flags, build a config, call one library function, render.

Heavy modules (torch, onnx) are imported inside the commands that need them, so that
`mnist-edge --help` is fast and works on an edge install without torch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
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
console = Console(highlight=False, soft_wrap=True)
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
    matrix = Table(title="confusion matrix (rows: true digit, columns: predicted)")
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
        table = Table(title=f"{art.path} ({art.format}) {verdict}", title_justify="left")
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
                "yes" if g.passed else "[red]NO[/red]",
            )
        console.print(table)
    console.print(
        f"tolerances: atol {report.atol:g}, rtol {report.rtol:g} (an element passes within either)"
    )


def finish_parity(report: Any, json_path: Path | None) -> None:
    """Write --json, then exit 1 naming the failed artifacts, if any."""
    from .files import write_json

    if json_path:
        write_json(json_path, report.to_dict())
        console.print(f"wrote {json_path}")
    failed = [a.path for a in report.artifacts if not a.passed]
    if failed:
        raise fail(f"parity FAILED for {', '.join(failed)}", code=1)
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
) -> None:
    """Export the checkpoint, then check the exports against PyTorch (parity)."""
    from .export import FORMATS, ExportConfig, export, record_parity
    from .parity import check_checkpoint

    names = [f.strip() for f in format.split(",") if f.strip()]
    formats = FORMATS if names == ["all"] else tuple(names)
    cfg = ExportConfig(
        checkpoint=str(checkpoint), output_dir=str(output_dir), formats=formats, opset=opset
    )
    artifacts = export(cfg)
    for art in artifacts:
        console.print(f"wrote {output_dir / art.file}  ({art.format}, {art.bytes:,} bytes)")
    if no_parity:
        console.print("parity skipped (--no-parity); run `mnist-edge parity` to check")
        return
    report = check_checkpoint(
        checkpoint,
        [(art.path(output_dir), art.format) for art in artifacts],
        data_dir=_opt(data_dir),
        test_limit=test_limit,
        atol=atol,
        rtol=rtol,
    )
    record_parity(output_dir, {Path(a.path).name: a.verdict() for a in report.artifacts})
    render_parity(report)
    finish_parity(report, json_path)


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
        record_parity(output_dir, {Path(a.path).name: a.verdict() for a in report.artifacts})
    render_parity(report)
    finish_parity(report, json_path)


def main() -> None:
    """Console-script entry point."""
    app()
