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


def main() -> None:
    """Console-script entry point."""
    app()
