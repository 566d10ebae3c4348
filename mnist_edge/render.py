"""rich rendering of the library's result objects (the CLI's output); no decisions are made here.

Each function takes a result object (EvalResult, ParityReport, QuantResult, BenchReport, ...) and
prints it; pass/fail and exit codes are decided by the results themselves (`problems()`). rich
is imported when something is first printed through it (~40 ms of a command's start-up):
`predict` writes its rows as plain lines, so a prediction never waits for it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .edge import layout

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from .edge.bench import BenchReport
    from .edge.evaluate import EvalResult
    from .edge.parity import ParityReport
    from .edge.web import WebExport
    from .quantize import QuantResult
    from .workflow import ExportRun


class _Lazy:
    """A rich Console made on first use, with these settings."""

    def __init__(self, **settings: Any) -> None:
        self._settings, self._console = settings, None

    def get(self) -> Console:
        """The Console itself (what rich's own objects are given)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._settings)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


# Wide tables stay readable in logs and CI (no terminal: rich would assume 80 columns).
console: Console = _Lazy(
    highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120
)  # type: ignore[assignment]
err_console: Console = _Lazy(stderr=True, highlight=False, soft_wrap=True)  # type: ignore


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def plain(line: str, *, err: bool = False) -> None:
    """One line as it is (no markup), on stdout or stderr."""
    stream = sys.stderr if err else sys.stdout
    stream.write(line + "\n")


def error(message: str) -> None:
    """The one red `error:` line on stderr."""
    err_console.print(f"[red]error:[/red] {escape(message)}")


INTERRUPTED = "error: interrupted"
# Set by the console script (python -m mnist_edge): the interrupt line then goes to file
# descriptor 2 itself, past sys.stderr, which rich's live displays (a spinner, a progress bar)
# replace with a buffer of their own while they run (seen: exit 130 with nothing on stderr).
RAW_STDERR = False
said_interrupted = False


def interrupted() -> None:
    """`error: interrupted` on stderr, once, written past rich (see RAW_STDERR)."""
    global said_interrupted
    if said_interrupted:
        return
    line = INTERRUPTED + "\n"
    if RAW_STDERR:
        os.write(2, line.encode())
    else:
        sys.stderr.write(line)
        sys.stderr.flush()
    said_interrupted = True


def _fmt(value: float | None, spec: str = ".2e") -> str:
    return "-" if value is None else format(value, spec)


def _table(title: str, columns: tuple[str, ...], left: tuple[str, ...] = ()) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for col in columns:
        table.add_column(col, justify="left" if col in left else "right")
    return table


@contextmanager
def training_progress(epochs: int) -> Iterator[tuple[Any, Any]]:
    """(on_step, on_epoch) callbacks that draw a bar per epoch and one line per finished epoch."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.0f} img/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console.get(), transient=True) as progress:
        tasks: dict[int, Any] = {}

        def on_step(s: Any) -> None:
            if s.epoch not in tasks:
                tasks[s.epoch] = progress.add_task(
                    "", total=s.steps, epoch=f"{s.epoch}/{epochs}", loss=0.0, rate=0.0
                )
            progress.update(tasks[s.epoch], completed=s.step, loss=s.loss, rate=s.images_per_s)

        def on_epoch(m: Any) -> None:
            if m.epoch in tasks:
                progress.remove_task(tasks[m.epoch])
            progress.console.print(
                f"epoch {m.epoch}/{epochs}  train loss {m.train_loss:.4f}  "
                f"test loss {m.test_loss:.4f}  test accuracy {m.test_accuracy:.2f}%  "
                f"({m.images_per_s:.0f} img/s, {m.seconds:.0f} s)"
            )

        yield on_step, on_epoch


def trained(result: Any) -> None:
    resumed = result.resumed_from_epoch
    console.print(f"checkpoint {result.checkpoint}  test accuracy {result.test_accuracy:.2f}%"
                  + (f"  (resumed after epoch {resumed})" if resumed else ""))  # fmt: skip


def evaluation(r: EvalResult) -> None:
    console.print(f"{r.checkpoint} ({r.format})")
    console.print(f"test loss {r.loss:.4f}")
    console.print(f"accuracy {r.accuracy:.2f}% ({r.correct}/{r.n} test images)")
    k = len(r.confusion)
    columns = ("true", *(str(d) for d in range(k)), "accuracy %")
    matrix = _table("confusion matrix (rows: true digit, columns: predicted)", columns)
    for digit, row in enumerate(r.confusion):
        matrix.add_row(str(digit), *(str(v) for v in row), f"{r.per_class_accuracy[digit]:.2f}")
    console.print(matrix)


def parity(report: ParityReport) -> None:
    """One table per artifact, then the tolerances."""
    columns = (
        "inputs",
        "n",
        "max |d|",
        "p99 |d|",
        "max rel",
        "min atol",
        "argmax %",
        "acc %",
        "ok",
    )
    for art in report.artifacts:
        verdict = "[green]PASS[/green]" if art.passed else "[red]FAIL[/red]"
        if art.judge == "task":
            verdict += " (judged on argmax agreement and accuracy drop)"
        table = _table(f"{art.path} ({art.format}) {verdict}", columns, left=("inputs", "ok"))
        for g in art.groups:
            table.add_row(
                g.name, str(g.n), _fmt(g.max_abs_diff), _fmt(g.p99_abs_diff),
                _fmt(g.max_rel_diff), _fmt(g.min_atol), f"{g.argmax_agreement:.2f}",
                _fmt(g.candidate_accuracy, ".2f"), "yes" if art.group_ok(g) else "[red]NO[/red]",
            )  # fmt: skip
        console.print(table)
    console.print(
        f"reference {report.checkpoint}; tolerances: atol {report.atol:g}, rtol {report.rtol:g} "
        "(an element passes within either)"
    )


def gate(g: QuantResult) -> None:
    verdict = "[green]passed[/green]" if g.passed else "[red]FAILED[/red]"
    console.print(
        f"wrote {g.path}  ({g.format}, {g.bytes:,} bytes, {g.size_ratio:.2f}x fp32)\n"
        f"INT8 gate {verdict}: accuracy fp32 {g.fp32_accuracy:.2f}% -> int8 "
        f"{g.int8_accuracy:.2f}% (drop {g.accuracy_drop:+.2f} points, limit "
        f"{g.max_accuracy_drop:g}), argmax agreement {g.argmax_agreement:.2f}% (minimum "
        f"{g.min_argmax_agreement:g}%) on {g.test_images} test images"
    )


def export_run(run: ExportRun, *, wrote: bool = True) -> None:
    """Artifacts written, the gate, the parity tables; the verdict line when all passed."""
    if wrote:
        for art in run.artifacts:
            if not layout.get(art.format).task_judged:  # INT8 files: their gate says it
                console.print(f"wrote {art.path(run.output_dir or '.')}  ({art.format}, "
                              f"{art.bytes:,} bytes)")  # fmt: skip
    if run.diagnosis is not None:
        diagnosis(run.diagnosis)
    for g in run.gates:
        gate(g)
    if run.parity is not None:
        parity(run.parity)
        if not run.problems():
            n = len(run.parity.artifacts)
            console.print(f"[green]parity passed[/green] for {n} artifact(s)")


def bench(report: BenchReport) -> None:
    env = report.environment
    console.print(
        f"{env['cpu']}, {env['cores']} cores ({', '.join(env['cpu_flags'])}); "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if k != "mnist-edge")
    )
    rates = ", ".join(f"{t} thread(s) {g:.1f}" for t, g in report.matmul_gflops.items())
    console.print(f"fp32 GEMM roofline, ONNX Runtime MatMul (GFLOP/s): {rates}")
    columns = ("backend", "batch", "thr", "p50", "p99", "mean", "img/s", "cold", "GFLOP/s",
               "roof", "vs eager", "RSS MB")  # fmt: skip
    table = _table("latency (ms) and throughput", columns, left=("backend",))
    for c in report.cases:
        table.add_row(
            c.backend, str(c.batch_size), str(c.threads), f"{c.p50_ms:.3f}", f"{c.p99_ms:.3f}",
            f"{c.mean_ms:.3f}", f"{c.throughput:.0f}", f"{c.cold_start_ms:.0f}", f"{c.gflops:.1f}",
            f"{c.roofline_fraction:.0%}", _fmt(c.p50_vs_eager, ".2f"), _fmt(c.peak_rss_mb, ".0f"),
        )  # fmt: skip
    console.print(table)
    for o in report.overhead:
        console.print(
            f"Predictor.predict overhead, batch {o.batch_size}, {o.threads} thread(s): "
            f"{o.predict_p50_ms:.3f} ms vs session.run {o.session_run_p50_ms:.3f} ms "
            f"({o.overhead_pct:+.1f}%)"
        )
    for s in report.scenarios:
        console.print(f"scenario {s['scenario']}: {s['summary']}")


def tune(report: Any) -> None:
    """The ranked table of `mnist-edge tune`, what was not tried and why, and the pick."""
    m = report.machine
    console.print(f"{m['cpu']} ({m['isa_class']}: {' '.join(m['cpu_flags']) or 'no flags'}); "
                  f"gate: {report.test_images} test digits, accuracy drop <= "
                  f"{report.rule.max_accuracy_drop:g} points, agreement >= "
                  f"{report.rule.min_argmax_agreement:g}%")  # fmt: skip
    columns = ("#", "case", "precision", "thr", "p50 ms", "p90 ms", "img/s", "RSS MB", "acc %",
               "agree %", "max |d|", "gate")  # fmt: skip
    table = _table(f"ranked by {report.objective}", columns, left=("case", "precision", "gate"))
    for i, t in enumerate(report.ranked(), 1):
        if t.error:
            table.add_row(str(i), t.case.name, t.case.precision, str(t.threads), *["-"] * 7,
                          f"error: {escape(t.error)}")  # fmt: skip
            continue
        table.add_row(
            str(i), t.case.name, t.case.precision, str(t.threads), f"{t.p50_ms:.3f}",
            f"{t.p90_ms:.3f}", f"{t.images_per_s:.0f}", _fmt(t.peak_rss_mb, ".0f"),
            f"{t.accuracy:.2f}", f"{t.argmax_agreement:.2f}", f"{t.max_abs_diff:.2g}",
            "pass" if t.passed else "[red]FAIL[/red]",
        )  # fmt: skip
    console.print(table)
    for name, why in report.skipped.items():
        console.print(f"not tried: {name}: {why}")
    if (best := report.best) is not None:
        console.print(f"best: {best.case.name} ({best.case.precision}), {best.threads} thread(s), "
                      f"{best.p50_ms:.3f} ms p50, {best.images_per_s:.0f} images/s -> "
                      f"{report.profile}")  # fmt: skip


def regressions(check: Any) -> None:
    """The cases of a bench report worse than its baseline (bench.RegressionCheck)."""
    for r in check.found:
        err_console.print(
            f"[red]regression:[/red] {r.backend} batch {r.batch_size} threads {r.threads} "
            f"{r.metric} {r.baseline:.3f} -> {r.current:.3f} ({r.change_pct:+.1f}% worse)"
        )
    if not check.found:
        console.print(f"no regression beyond {check.max_regression_pct:g}% against "
                      f"{check.baseline}")  # fmt: skip


def prediction(row: Any) -> None:
    """`FILE  LABEL  CONF%  (others)` for one FileResult."""
    others = "  ".join(f"{c} {p:.1%}" for c, p in row.top[1:])
    plain(f"{row.file}  {row.label}  {row.confidence:.1%}" + (f"  ({others})" if others else ""))


@contextmanager
def predict_rows(as_json: bool) -> Iterator[tuple[Any, Any, Any]]:
    """(on_start, on_row, on_progress) for predict_paths and predict_on_ray: which model runs
    (on stderr, unless --model named it), a line per file (errors on stderr), and progress on
    stderr for many files: a bar on a terminal; on Ray, where rows are printed once the job is
    done, a line at every tenth of the files otherwise."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        bar: list[Any] = []
        said = [0]

        def on_start(summary: Any) -> None:
            if summary.source != "--model":
                plain(f"model: {summary.model} ({summary.source}, {summary.case})", err=True)
            if summary.files >= 2 and sys.stderr.isatty() and err_console.is_terminal:
                from rich.progress import Progress

                progress = stack.enter_context(Progress(console=err_console.get(), transient=True))
                bar[:] = [progress, progress.add_task("predicting", total=summary.files)]

        def on_progress(done: int, total: int) -> None:
            if bar:
                bar[0].update(bar[1], completed=done)
            elif done * 10 // total > said[0] or done == total:
                said[0] = done * 10 // total
                plain(f"ray: {done}/{total} files answered", err=True)

        def on_row(row: Any) -> None:
            if bar and not bar[0].tasks[0].finished:
                bar[0].advance(bar[1])
            if row.error is not None:
                error(row.error)
            elif not as_json:
                prediction(row)

        yield on_start, on_row, on_progress


def predicted(summary: Any, as_json: bool) -> None:
    """After the rows: the JSON of the answered files (--json), and where the rows went."""
    if as_json:
        console.print_json(json.dumps([r.to_dict() for r in summary.rows if r.error is None]))
    if summary.output is not None:
        err_console.print(f"wrote {summary.output} ({summary.total} rows)")


def layers(report: Any) -> None:
    """A table per artifact, layer by layer, then the one line that says where."""
    columns = ("layer", "tensor", "max |d|", "p99 |d|", "min atol", "SQNR dB", "cosine",
               "argmax %", "ok")  # fmt: skip
    for art in report.artifacts:
        judge = (
            "elementwise atol/rtol"
            if art.judge == "tensor"
            else f"SQNR >= {report.min_sqnr_db:g} dB"
        )
        table = _table(f"{art.path} ({art.format}), judged on {judge}", columns,
                       left=("layer", "tensor", "ok"))  # fmt: skip
        for r in art.layers:
            table.add_row(
                r.layer, r.tensor, _fmt(r.max_abs_diff), _fmt(r.p99_abs_diff), _fmt(r.min_atol),
                f"{r.sqnr_db:.1f}", f"{r.cosine:.6f}", _fmt(r.argmax_agreement, ".2f"),
                "yes" if r.passed else "[red]NO[/red]",
            )  # fmt: skip
        console.print(table)
        for layer, why in art.unpaired.items():
            console.print(f"  {layer}: not compared: {why}")
        colour = "green" if art.passed else "red"
        console.print(f"[{colour}]{escape(art.summary())}[/{colour}]")
    console.print(
        f"reference {report.reference}, {report.images} test images; atol {report.atol:g}, "
        f"rtol {report.rtol:g}"
    )


def diagnosis(d: Any) -> None:
    """The quantization doctor: per-layer SQNR, then the auto-exclude steps, if any."""
    columns = ("layer", "node", "weight SQNR dB", "activation SQNR dB", "drop dB")
    table = _table("INT8 per layer (activation: fp32 model against INT8 model)", columns,
                   left=("layer", "node"))  # fmt: skip
    for h in d.layers:
        table.add_row(h.layer, h.node, f"{h.weight_sqnr_db:.1f}", f"{h.activation_sqnr_db:.1f}",
                      f"{h.drop_db:+.1f}")  # fmt: skip
    console.print(table)
    console.print(f"suspects, worst first: {', '.join(h.layer for h in d.suspects())}")
    if len(d.steps) > 1:
        cols = ("fp32 layers", "int8 acc %", "drop", "agree %", "bytes", "b1 p50 ms", "gate")
        steps = _table("auto-exclude: layers kept in fp32, step by step", cols,
                       left=("fp32 layers", "gate"))  # fmt: skip
        for s in d.steps:
            verdict = "pass" if s.passed else "[red]fail[/red]"
            steps.add_row(", ".join(s.excluded_layers) or "(none)", f"{s.int8_accuracy:.2f}",
                          f"{s.accuracy_drop:+.2f}", f"{s.argmax_agreement:.2f}", f"{s.bytes:,}",
                          f"{s.batch1_p50_ms:.3f}", verdict)  # fmt: skip
        console.print(steps)


def web_export(r: WebExport, source: str) -> None:
    """The web folder written, where its model and ONNX Runtime Web come from."""
    console.print(f"wrote {r.folder}/ ({len(r.files)} files) from the {source}")
    where = "copied into the folder" if r.local else "loaded from a CDN by the page"
    console.print(f"onnxruntime-web {r.ort_version}: {where} ({r.ort_source.split(': ', 1)[1]})")
    for note in r.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(f"open it with: mnist-edge serve {r.folder}")


def serving(info: Any) -> None:
    """Where the server listens, what it serves (the models still loading)."""
    page = f"; the page {info.web}" if info.web is not None else ""
    grpc = f", gRPC at {info.grpc_address}" if info.grpc_address else ""
    where = (f"{info.url}v2/models/{info.names[0]}" if len(info.names) == 1
             else f"{info.url}v2/models/ ({', '.join(info.names)})")  # fmt: skip
    workers = f"; {info.workers} workers" if info.workers > 1 else ""
    plain(f"serving at {info.url} (Ctrl-C stops): the Open Inference Protocol at "
          f"{where}{grpc}{page}{workers}")  # fmt: skip
    sys.stdout.flush()


def serve_ready(info: Any) -> None:
    models = ", ".join(f"{m.name} v{m.version} = {m.file} ({m.case}, {m.threads or 'all'} "
                       "engine threads)" for m in info.models)  # fmt: skip
    per = " in each worker" if info.workers > 1 else ""
    plain(f"ready: {models}; batches of up to {info.max_batch} images, {info.max_delay_us} us"
          f"{per}")  # fmt: skip
    sys.stdout.flush()


def serving_on_ray(url: str) -> None:
    plain(f"deploying on Ray Serve at {url} (Ctrl-C stops)")
    sys.stdout.flush()


def ray_ready(url: str, replicas: int) -> None:
    plain(f"serving at {url} on Ray Serve ({replicas} replicas): the Open Inference Protocol "
          f"at {url}v2/models/")  # fmt: skip
    sys.stdout.flush()


def triton_export(repo: Any) -> None:
    """The Triton repository's models, and what was left out."""
    for m in repo.models:
        dims = ", ".join(f"{k} {v}" for k, v in {**m.inputs, **m.outputs}.items())
        plain(f"wrote {m.config.parent} (Triton, onnxruntime backend; {dims} per item)")
    for reason in repo.skipped:
        plain(f"left out {reason}", err=True)


def formats_left_out(formats: list[str]) -> None:
    """`--format all` without some converters: which formats, and the extra for each."""
    for fmt in formats:
        f = layout.get(fmt)
        plain(f"left out {fmt}: its converter ({f.converter}) is not installed; "
              f"pip install 'mnist-edge[{f.extra}]'", err=True)  # fmt: skip
