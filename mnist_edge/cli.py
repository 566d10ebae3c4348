"""The `mnist-edge` command line: declare options, build a config, call one library function,
render its result (render.py) and map `problems()` to the exit code.

Exit codes: 0 success; 1 a check that ran and failed (parity, the INT8 gate, a bench
regression, an unreadable file among many in `predict`); 2 a user error; 130 Ctrl-C.
Each command imports what it runs only when it runs (torch, onnx, numpy and onnxruntime
included), so that `mnist-edge --help` is fast and the edge install (no torch) runs every
inference command. Option defaults are the configs' own (edge/policy.py; tests/test_cli.py
holds the two together). Data is loaded once per command and passed to each check as a value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from . import options as o
from . import render
from .edge import policy
from .edge.layout import Layout
from .serve_command import serve_cmd

app = typer.Typer(
    cls=o.OneLineErrors,
    name="mnist-edge",
    help="Train, export, verify and run the MNIST CNN on edge CPUs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = render.console
DEFAULT = Layout()

Opt = typer.Option


@app.command("train")
@o.handle_errors
def train_cmd(
    epochs: o.Epochs = 10,
    batch_size: o.BatchSize = 64,
    learning_rate: o.LearningRate = 1e-3,
    seed: o.Seed = 1,
    data_dir: o.DataDir = None,
    output_dir: o.OutputDir = DEFAULT.root,
    limit: o.Limit = None,
    test_limit: o.TestLimit = None,
    resume: o.Resume = False,
    threads: o.Threads = None,
    recipe: o.Recipe = "default",
    lr_schedule: o.LrSchedule = None,
    augment: o.Augment = None,
    low_res: o.LowRes = None,
    weight_decay: o.WeightDecay = None,
    device: o.Device = "auto",
    amp: o.Amp = False,
) -> None:
    """Train the CNN on MNIST and write a checkpoint after every epoch."""
    from .train import TrainConfig, train

    cfg = TrainConfig.from_recipe(
        recipe, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
        limit=limit, test_limit=test_limit, threads=threads, data_dir=o.opt_str(data_dir),
        output_dir=str(output_dir), lr_schedule=lr_schedule, augment=augment,
        low_res=low_res, weight_decay=weight_decay, device=device, amp=amp,
    )  # fmt: skip
    with render.training_progress(cfg.epochs) as (on_step, on_epoch):
        result = train(cfg, resume=resume, on_step=on_step, on_epoch=on_epoch)
    if result.is_main:  # other ranks of a torchrun job stay quiet
        render.trained(result)


@app.command("evaluate")
@o.handle_errors
def evaluate_cmd(
    checkpoint: o.CheckpointOpt = DEFAULT.checkpoint,
    model: Annotated[
        Path | None, Opt("--model", help="A deployed artifact (.onnx, .int8.onnx, .ort) instead.")
    ] = None,
    data_dir: o.DataDir = None,
    test_limit: o.TestLimit = None,
    threads: o.Threads = None,
    backend: o.Backend = None,
    precision: o.Precision = None,
    json_path: o.JsonOut = None,
) -> None:
    """Test loss, accuracy, per-class accuracy and confusion matrix of a checkpoint or artifact."""
    from .edge.evaluate import evaluate
    from .edge.runners import load_runner

    runner = load_runner(model or checkpoint, threads=threads, backend=backend,
                         precision=precision)  # fmt: skip
    result = evaluate(runner, o.data_for(data_dir, test_limit).test)
    render.evaluation(result)
    o.finish(result, json_path)


@app.command("export")
@o.handle_errors
def export_cmd(
    format: o.ExportFormat = "onnx",
    checkpoint: o.CheckpointOpt = DEFAULT.checkpoint,
    output_dir: o.OutputDir = DEFAULT.root,
    opset: Annotated[int | None, Opt("--opset", help="ONNX opset.")] = None,
    no_parity: o.NoParity = False,
    data_dir: o.DataDir = None,
    test_limit: o.TestLimit = None,
    atol: o.Atol = policy.ATOL,
    rtol: o.Rtol = policy.RTOL,
    json_path: o.JsonOut = None,
    quantize: Annotated[str | None, Opt("--quantize", help="Also write INT8: int8.")] = None,
    calibration_size: o.CalibrationSize = policy.CALIBRATION_SIZE,
    max_accuracy_drop: o.MaxDrop = policy.INT8_MAX_ACCURACY_DROP,
    min_agreement: o.MinAgreement = policy.INT8_MIN_AGREEMENT,
    ort_web: o.OrtWeb = None,
    web_dir: Annotated[Path | None, Opt("--web-dir", help="Default: OUTPUT_DIR/web.")] = None,
    ort_platform: o.OrtPlatform = "amd64",
) -> None:
    """Export the checkpoint, then check the exports against PyTorch (parity); `web` writes a
    static page on onnxruntime-web for the ONNX model (the packaged one if none is exported);
    `triton` a Triton model repository (OUTPUT_DIR/triton) of the ONNX model, and of the INT8
    one when there is one."""
    from .edge import web

    if not (names := o.csv_values(format, "--format", str)):
        raise o.fail(f"--format takes onnx, torchscript, pt2, ort, executorch, litert, web, "
                     f"triton or all, got {format!r}")  # fmt: skip
    with_web = "web" in names or (names == ("all",) and web.find_ort_web(ort_web) is not None)
    with_triton = "triton" in names or names == ("all",)
    if with_triton and "onnx" not in names and "all" not in names:
        names = ("onnx", *names)  # the repository holds the ONNX file: export it first
    if names := tuple(n for n in names if n not in ("web", "triton")):
        from .edge.layout import EXPORTED, QUANTIZABLE, exportable
        from .export import ExportConfig
        from .workflow import export_and_verify

        formats = exportable() if names == ("all",) else names
        if names == ("all",) and (left := [f for f in EXPORTED if f not in formats]):
            render.formats_left_out(left)
        cfg = ExportConfig(str(checkpoint), str(output_dir), formats, opset, ort_platform)
        if quantize not in (None, "int8"):
            raise o.fail(f"--quantize takes int8, got {quantize!r}")
        if quantize and not set(QUANTIZABLE) & set(cfg.formats):
            raise o.fail(f"--quantize int8 needs --format {', '.join(QUANTIZABLE)} (or all): "
                         "INT8 is made beside those")  # fmt: skip
        quant = None if not quantize else o.quant_config(
            Layout(output_dir).onnx, None, calibration_size=calibration_size,
            max_accuracy_drop=max_accuracy_drop, min_argmax_agreement=min_agreement,
        )  # fmt: skip
        check = None if no_parity else o.verify_config(checkpoint, atol, rtol)
        with console.status("exporting" + (", quantizing" if quant else "") + ", checking parity"):
            run = export_and_verify(cfg, quant=quant, check=check,
                                    data=o.data_for(data_dir, test_limit))  # fmt: skip
        render.export_run(run)
        if no_parity:
            console.print("parity skipped (--no-parity); run `mnist-edge parity` to check")
        o.finish(run, json_path)
    if with_triton:
        from .edge.triton import write_repository

        folder = Layout(output_dir)
        render.triton_export(write_repository(output_dir, folder.onnx, folder.int8))
    if with_web:
        page, source = web.config_for(output_dir, web_dir, ort_web)
        render.web_export(web.export_web(page), source)


@app.command("quantize")
@o.handle_errors
def quantize_cmd(
    model: Annotated[Path, Opt("--model", help="fp32 ONNX model.")] = DEFAULT.onnx,
    output: o.QuantOutput = None,
    checkpoint: o.CheckpointOpt = DEFAULT.checkpoint,
    calibration_size: o.CalibrationSize = policy.CALIBRATION_SIZE,
    max_accuracy_drop: o.MaxDrop = policy.INT8_MAX_ACCURACY_DROP,
    min_agreement: o.MinAgreement = policy.INT8_MIN_AGREEMENT,
    quant_format: o.QuantFormat = "qdq",
    per_channel: o.PerChannel = True,
    reduce_range: o.ReduceRange = True,
    activation_type: o.ActivationType = "uint8",
    weight_type: o.WeightType = "int8",
    calibration_method: o.CalibrationMethod = "minmax",
    no_parity: o.NoParity = False,
    data_dir: o.DataDir = None,
    test_limit: o.TestLimit = None,
    json_path: o.JsonOut = None,
    auto_exclude: o.AutoExclude = False,
) -> None:
    """INT8 static quantization with an accuracy gate and a per-layer diagnosis; exit 1 when the
    gate fails (with --auto-exclude: when no mix of fp32 and int8 layers passes)."""
    from .workflow import quantize_and_verify

    cfg = o.quant_config(
        model, output, calibration_size=calibration_size, max_accuracy_drop=max_accuracy_drop,
        min_argmax_agreement=min_agreement, quant_format=quant_format, per_channel=per_channel,
        reduce_range=reduce_range, activation_type=activation_type, weight_type=weight_type,
        calibration_method=calibration_method,
    )  # fmt: skip
    check = None if no_parity else o.verify_config(checkpoint, policy.ATOL, policy.RTOL)
    with console.status("quantizing to INT8 and evaluating fp32 and int8 on the test set"):
        run = quantize_and_verify(cfg, checkpoint=checkpoint, check=check,
                                  auto_exclude=auto_exclude,
                                  data=o.data_for(data_dir, test_limit))  # fmt: skip
    render.export_run(run, wrote=False)
    o.finish(run, json_path)


@app.command("parity")
@o.handle_errors
def parity_cmd(
    artifacts: Annotated[
        list[Path] | None, typer.Argument(help="Exported files (default: the manifest's).")
    ] = None,
    checkpoint: o.CheckpointOpt = DEFAULT.checkpoint,
    reference: Annotated[Path | None, Opt("--reference", help="An artifact instead.")] = None,
    output_dir: Annotated[
        Path, Opt("--output-dir", help="Folder of manifest.json.")
    ] = DEFAULT.root,
    data_dir: o.DataDir = None,
    test_limit: o.TestLimit = None,
    atol: o.Atol = policy.ATOL,
    rtol: o.Rtol = policy.RTOL,
    threads: o.Threads = None,
    backend: o.Backend = None,
    precision: o.Precision = None,
    json_path: o.JsonOut = None,
    layers: Annotated[
        bool, Opt("--layers", help="Compare every layer; name the first off.")
    ] = False,
    min_sqnr: Annotated[
        float, Opt("--min-sqnr", help="INT8 layers: least SQNR, dB.")
    ] = policy.MIN_SQNR_DB,
) -> None:
    """Compare exported models with the PyTorch model (or --reference); exit 1 on a mismatch."""
    from .workflow import layerwise, parity

    check = o.verify_config(reference or checkpoint, atol, rtol, threads, backend, precision)
    data = o.data_for(data_dir, test_limit)
    if layers:
        report = layerwise(artifacts, output_dir, check, min_sqnr_db=min_sqnr, data=data)
        render.layers(report)
        o.finish(report, json_path)
        return
    run = parity(artifacts, output_dir, check, data)
    render.export_run(run, wrote=False)
    o.finish(run, json_path)


@app.command("predict")
@o.handle_errors
def predict_cmd(
    images: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns.")],
    model: Annotated[Path | None, Opt("--model", help="Default: exported, else packaged.")] = None,
    top: Annotated[int, Opt("--top", min=1, max=10, help="Show the K best.")] = 1,
    as_json: Annotated[bool, Opt("--json", help="Print JSON instead.")] = False,
    output: o.RowsOutput = None,
    threads: o.Threads = None,
    backend: o.Backend = None,
    precision: o.Precision = None,
    profile: Annotated[Path | None, Opt("--profile", help="A deploy.json from tune.")] = None,
    workers: o.FileWorkers = None,
    ray: o.UseRay = False,
    ray_address: o.RayAddress = None,
    actors: o.Actors = None,
) -> None:
    """Classify digit images: a line per file (label, confidence); unreadable files get their own
    error line and make the exit code 1 (2 when no file could be read). With --ray, Ray Data
    actors answer the files (each --threads engine threads, 1 by default); the rows come out
    in input order once the job is done."""
    from .edge.predict import PredictConfig, predict_paths

    cfg = PredictConfig(o.opt_str(model), top, threads, workers, backend, precision,
                        o.opt_str(profile), o.opt_str(output))  # fmt: skip
    with render.predict_rows(as_json) as (on_start, on_row, on_progress):
        if ray or ray_address:
            from .edge.cluster import RayConfig, predict_on_ray

            ray_cfg = RayConfig(ray_address, cpus=threads or 1, actors=actors)
            summary = predict_on_ray(images, cfg, ray_cfg, on_start=on_start,
                                     on_progress=on_progress, on_row=on_row)  # fmt: skip
        else:
            summary = predict_paths(images, cfg, on_start=on_start, on_row=on_row)
    render.predicted(summary, as_json)
    if summary.failed:
        raise typer.Exit(o.EXIT_ERROR if summary.failed == summary.total else o.EXIT_FAILED)


@app.command("bench")
@o.handle_errors
def bench_cmd(
    backends: o.BenchBackends = None,
    batch_sizes: o.BatchSizes = "1,8,64",
    threads: o.ThreadList = None,
    warmup: o.Warmup = 10,
    iterations: o.Iterations = None,
    duration: o.Duration = 2.0,
    model: Annotated[Path, Opt("--model", help="ONNX model.")] = DEFAULT.onnx,
    checkpoint: o.CheckpointOpt = DEFAULT.checkpoint,
    data_dir: o.DataDir = None,
    json_path: o.BenchJson = None,
    plot: o.Plot = None,
    compare: o.Compare = None,
    max_regression: o.MaxRegression = policy.MAX_REGRESSION_PCT,
    scenario: o.Scenario = None,
    queries: o.Queries = 1024,
    qps: o.Qps = 100.0,
    workers: o.ServerWorkers = None,
    latency_bound_ms: o.LatencyBound = policy.SERVER_LATENCY_BOUND_MS,
    idle_gap: o.IdleGap = 2.0,
) -> None:
    """Latency and throughput of every available backend side by side, plus scenarios."""
    from .edge import bench
    from .edge.threads import cores

    baseline = bench.load_baseline(compare) if compare else None
    bench.check_max_regression(max_regression)
    chosen = (bench.chosen_backends(o.csv_values(backends, "--backends", str), model, checkpoint)
              if backends
              else bench.default_backends(model, checkpoint))  # fmt: skip
    if not chosen:
        raise o.fail(f"nothing to benchmark: no model at {model}; export one with "
                   "`mnist-edge export --format onnx` or pass --model")  # fmt: skip
    scenarios = o.csv_values(scenario, "--scenario", str) if scenario else ()
    cfg = bench.BenchConfig(
        backends=chosen, batch_sizes=o.csv_values(batch_sizes, "--batch-sizes"),
        threads=o.csv_values(threads, "--threads") if threads else (1, cores()),
        warmup=warmup, iterations=iterations, duration=duration, model=str(model),
        checkpoint=str(checkpoint),
        scenarios=bench.SCENARIOS if scenarios == ("all",) else scenarios, queries=queries,
        qps=qps, workers=workers or cores(), latency_bound_ms=latency_bound_ms,
        idle_gap_s=idle_gap,
    )  # fmt: skip
    for name in cfg.backends:
        cfg.path(name)  # a missing file is named before the data is looked for
    report = bench.bench(cfg, o.data_for(data_dir, bench.images_needed(cfg)).test)
    render.bench(report)
    if plot:
        bench.plot(report, plot)
        console.print(f"wrote {plot}")
    verdict = None if baseline is None else bench.check_regressions(report, compare, baseline,
                                                                    max_regression)  # fmt: skip
    if verdict is not None:
        render.regressions(verdict)
    o.finish(report, json_path, verdict)


@app.command("tune")
@o.handle_errors
def tune_cmd(
    model: Annotated[Path, Opt("--model", help="fp32 ONNX; INT8/ORT files beside it join.")] = (
        DEFAULT.onnx
    ),
    threads: o.ThreadList = None,
    backends: Annotated[
        str | None, Opt("--backends", help=o.CASES_HELP + "; default: every installed case.")
    ] = None,  # fmt: skip
    objective: Annotated[str, Opt("--objective", help="latency or throughput.")] = "latency",
    test_limit: Annotated[
        int, Opt("--test-limit", help="Test digits to gate on.")
    ] = policy.TUNE_TEST_LIMIT,
    max_accuracy_drop: o.MaxDrop = policy.DEPLOY_MAX_ACCURACY_DROP,
    min_agreement: o.MinAgreement = policy.DEPLOY_MIN_AGREEMENT,
    duration: Annotated[float, Opt("--duration", help="Seconds per measurement.")] = 1.0,
    profile: Annotated[Path | None, Opt("--profile", help="Default: deploy.json beside it.")] = (
        None
    ),
    data_dir: o.DataDir = None,
    json_path: o.JsonOut = None,
) -> None:
    """Find the fastest backend, precision and thread count on this CPU that keeps the model's
    answers; write it as a deployment profile (deploy.json)."""
    from .edge.tune import TuneConfig, open_reference, tune

    cfg = TuneConfig(
        model=str(model), threads=o.csv_values(threads, "--threads") if threads else (),
        backends=o.csv_values(backends, "--backends", str) if backends else (),
        objective=objective, test_limit=test_limit, max_accuracy_drop=max_accuracy_drop,
        min_argmax_agreement=min_agreement, duration=duration, profile=o.opt_str(profile),
    )  # fmt: skip
    reference = open_reference(cfg)  # a bad file is named before the data is looked for
    test = o.data_for(data_dir, cfg.test_limit).test
    with console.status("trying every backend, precision and thread count"):
        report = tune(cfg, test, reference)
    render.tune(report)
    o.finish(report, json_path)


app.command("serve")(o.handle_errors(serve_cmd))  # the server's many options: serve_command.py


def main() -> Any:
    """Console-script entry point (options.run_app: the named command alone is built)."""
    return o.run_app(app)
