"""What the commands in cli.py share: option declarations, exit codes, the one-line error
handling (library errors, translated foreign ones, usage errors and Ctrl-C), the --json and
exit-code ending of a command, and the turning of option values into library arguments."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from . import render
from .edge.errors import interrupted, translate

F = TypeVar("F", bound=Callable[..., Any])
EXIT_ERROR, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130

Opt = typer.Option
DataDir = Annotated[
    Path | None,
    Opt("--data-dir", help="Folder with MNIST/raw/*.gz (may be read-only). Default: "
        "$MNIST_EDGE_DATA, then the user cache, then a download."),
]  # fmt: skip
Threads = Annotated[int | None, Opt("--threads", help="CPU threads (default: all).")]
OrtWeb = Annotated[str | None, Opt("--ort-web", help="onnxruntime-web package folder (npm).")]
TestLimit = Annotated[int | None, Opt("--test-limit", help="Use only the first N test images.")]
JsonOut = Annotated[Path | None, Opt("--json", help="Also write the numbers as JSON.")]
CheckpointOpt = Annotated[Path, Opt("--checkpoint", help="Training checkpoint.")]
OutputDir = Annotated[Path, Opt("--output-dir", help="Artifact folder.")]
Atol = Annotated[float, Opt("--atol", help="Absolute tolerance per element.")]
Rtol = Annotated[float, Opt("--rtol", help="Relative tolerance per element.")]
NoParity = Annotated[bool, Opt("--no-parity", help="Skip the parity check.")]
CalibrationSize = Annotated[int, Opt("--calibration-size", help="Training images to calibrate.")]
Backend = Annotated[
    str | None,
    Opt(
        "--backend",
        help="onnxruntime, openvino, executorch, litert or torch (default: the file's own).",
    ),
]
Precision = Annotated[
    str | None, Opt("--precision", help="fp32, bf16 or int8 (default: the file's).")
]
MaxDrop = Annotated[float, Opt("--max-accuracy-drop", help="INT8 rule: points of accuracy.")]
MinAgreement = Annotated[
    float, Opt("--min-agreement", help="INT8 rule: % of answers equal to fp32's.")
]
CASES_HELP = ("Case names or patterns, e.g. onnxruntime,onnxruntime-int8 or 'openvino*' "
              "(bench and tune alike)")  # fmt: skip
ThreadList = Annotated[str | None, Opt("--threads", help="e.g. 1,2 (default: 1 and all)")]

# train
Epochs = Annotated[int, Opt("--epochs", help="Passes over the data.")]
BatchSize = Annotated[int, Opt("--batch-size", "--batch_size", help="Images per step.")]
LearningRate = Annotated[
    float, Opt("--learning-rate", "--learning_rate", help="Adam learning rate.")
]
Seed = Annotated[int, Opt("--seed", help="Seed for weights and shuffling.")]
Limit = Annotated[int | None, Opt("--limit", help="Train on the first N images only.")]
Resume = Annotated[bool, Opt("--resume", help="Continue OUTPUT_DIR/mnist_cnn.pt.")]
Recipe = Annotated[str, Opt("--recipe", help="default or original.")]
LrSchedule = Annotated[str | None, Opt("--lr-schedule", help="cosine, constant.")]
Augment = Annotated[bool | None, Opt("--augment/--no-augment", help="Shifts.")]
LowRes = Annotated[
    float | None, Opt("--low-res", help="Share of images made low resolution (0..1).")
]
WeightDecay = Annotated[float | None, Opt("--weight-decay", help="Adam L2 penalty.")]
Device = Annotated[str, Opt("--device", help="auto, cpu, cuda or mps.")]
Amp = Annotated[bool, Opt("--amp", help="Mixed precision on CUDA.")]

# serve
WebFolder = Annotated[
    Path | None, typer.Argument(help="A web export to serve beside the API (default: "
                                "exports/web when there is one).")
]  # fmt: skip
Host = Annotated[str, Opt("--host", help="Address to listen on.")]
Port = Annotated[int, Opt("--port", help="0: any free port.")]
GrpcPort = Annotated[
    int | None,
    Opt("--grpc-port", help="The gRPC service's port. Default: --port + 1 (8001), any free one "
                            "with --port 0."),
]  # fmt: skip
Grpc = Annotated[bool, Opt("--grpc/--no-grpc", help="Serve the protocol's gRPC service too.")]
Verbose = Annotated[bool, Opt("--verbose", help="Log every request.")]
FileWorkers = Annotated[
    int | None,
    Opt("--workers", min=0,
        help="Processes preparing images (0: this one; default: the cores the model's threads "
             "leave)."),
]  # fmt: skip
RowsOutput = Annotated[Path | None, Opt("--output", help="Write results to a .csv or .jsonl file.")]
ExportFormat = Annotated[
    str, Opt("--format", help="onnx, torchscript, pt2, ort, executorch, litert, web, triton, all.")
]
OrtPlatform = Annotated[str, Opt("--ort-platform", help="amd64 or arm (the .ort's CPU).")]
UseRay = Annotated[bool, Opt("--ray", help="On Ray: RAY_ADDRESS's cluster, else a local one.")]
RayAddress = Annotated[
    str | None, Opt("--ray-address", help="Join this Ray cluster (implies --ray).")
]
Actors = Annotated[int | None, Opt("--actors", min=1, help="Ray actors (default: CPUs/threads).")]
Replicas = Annotated[int, Opt("--replicas", min=1, help="Ray Serve replicas (with --ray).")]
ModelName = Annotated[str, Opt("--name", help="The model's name in /v2/models/NAME.")]
MaxBatch = Annotated[int, Opt("--max-batch", help="Images per model call (1: no batching).")]
MaxDelay = Annotated[int, Opt("--max-delay", help="Microseconds a request waits for others.")]
MaxQueue = Annotated[int, Opt("--max-queue", help="Images waiting at most (then 503).")]
MaxBody = Annotated[int, Opt("--max-body", help="Bytes in a request body (then 413).")]
MaxRequestImages = Annotated[int, Opt("--max-request-images", help="Images in one request.")]
MaxConnections = Annotated[int, Opt("--max-connections", help="Open at once (then 503).")]
Timeout = Annotated[float, Opt("--timeout", help="Seconds a request may take (then 504).")]
ServeModels = Annotated[
    list[str] | None,
    Opt("--model", help="PATH, or NAME=PATH, repeated for several models. Default: exported, "
                        "else packaged."),
]  # fmt: skip
ApiKeys = Annotated[
    list[str] | None,
    Opt("--api-key", help="A key for the inference API, repeated for rotation (visible to "
                          "`ps`: prefer --api-key-file or MNIST_EDGE_API_KEYS)."),
]  # fmt: skip
ApiKeyFile = Annotated[Path | None, Opt("--api-key-file", help="Inference keys, one a line.")]
AdminKeys = Annotated[
    list[str] | None,
    Opt("--admin-key", help="A key for model management (load, unload) and inference, "
                            "repeated for rotation (or --admin-key-file, MNIST_EDGE_ADMIN_KEYS)."),
]  # fmt: skip
AdminKeyFile = Annotated[Path | None, Opt("--admin-key-file", help="Admin keys, one a line.")]
ProtectMetrics = Annotated[bool, Opt("--protect-metrics", help="/metrics needs a key too.")]
Insecure = Annotated[
    bool, Opt("--insecure", help="Serve a non-loopback --host without an inference key.")
]
Trace = Annotated[
    bool, Opt("--trace", help="OpenTelemetry spans of each request, exported as OTEL_* say "
              "(the tracing extra).")
]  # fmt: skip
TlsCert = Annotated[Path | None, Opt("--tls-cert", help="PEM certificate: REST and gRPC over TLS.")]
TlsKey = Annotated[Path | None, Opt("--tls-key", help="PEM private key of --tls-cert.")]
TlsClientCa = Annotated[
    Path | None, Opt("--tls-client-ca", help="Require client certificates signed by this CA.")
]
ModelRepository = Annotated[
    Path | None,
    Opt("--model-repository", help="A folder of models: Triton's layout (export --format "
                                   "triton) or model files, each served under its name."),
]  # fmt: skip
ServeWorkers = Annotated[
    int | None,
    Opt("--workers", min=1, max=64,
        help="Server processes on the same ports, the cores divided between them. Default: "
             "one per core (the cores / --threads with --threads)."),
]  # fmt: skip
Profile = Annotated[Path | None, Opt("--profile", help="A deploy.json from tune.")]

# quantize
QuantOutput = Annotated[
    Path | None, Opt("--output", help="Default: mnist_cnn.int8.onnx beside --model.")
]
QuantFormat = Annotated[str, Opt("--quant-format", help="qdq or qoperator.")]
PerChannel = Annotated[bool, Opt("--per-channel/--per-tensor", help="Weight scales.")]
ReduceRange = Annotated[
    bool, Opt("--reduce-range/--full-range", help="7-bit weights: same answers on every CPU.")
]
ActivationType = Annotated[str, Opt("--activation-type", help="uint8 or int8.")]
WeightType = Annotated[str, Opt("--weight-type", help="int8 or uint8.")]
CalibrationMethod = Annotated[
    str, Opt("--calibration-method", help="minmax, entropy or percentile.")
]
AutoExclude = Annotated[
    bool, Opt("--auto-exclude", help="On a gate failure keep the worst layers in fp32.")
]

# bench
BenchBackends = Annotated[
    str | None, Opt("--backends", help=CASES_HELP + "; default: every case whose file exists.")
]
BatchSizes = Annotated[str, Opt("--batch-sizes", help="e.g. 1,8,64")]
Warmup = Annotated[int, Opt("--warmup", help="Untimed calls per case.")]
Iterations = Annotated[int | None, Opt("--iterations", help="Timed calls per case.")]
Duration = Annotated[float, Opt("--duration", help="Seconds per case.")]
BenchJson = Annotated[Path | None, Opt("--json", help="Write the report here.")]
Plot = Annotated[Path | None, Opt("--plot", help="Latency plot (PNG).")]
Compare = Annotated[Path | None, Opt("--compare", help="Baseline bench JSON.")]
MaxRegression = Annotated[float, Opt("--max-regression", help="Allowed %, worse.")]
Scenario = Annotated[str | None, Opt("--scenario", help="e.g. server,idle or all.")]
Queries = Annotated[int, Opt("--queries", help="Single-stream/server queries.")]
Qps = Annotated[float, Opt("--qps", help="Server: Poisson arrival rate.")]
ServerWorkers = Annotated[int | None, Opt("--workers", help="Server: worker threads.")]
LatencyBound = Annotated[float, Opt("--latency-bound-ms", help="Server p99 bound.")]
IdleGap = Annotated[float, Opt("--idle-gap", help="Idle: seconds before each call.")]


class OneLineErrors(TyperGroup):
    """Usage errors (an unknown option, a value of the wrong type) as one `error:` line and exit
    2, like every other error, instead of click's usage box."""

    def main(self, *args: Any, standalone_mode: bool = True, **kw: Any) -> Any:
        try:
            rv = super().main(*args, standalone_mode=False, **kw)
        except typer.TyperException as exc:  # click's usage errors
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # `mnist-edge` alone: the help
            else:
                render.error(" ".join(exc.format_message().split()))
            rv = exc.exit_code
        except typer.Abort:
            render.interrupted()
            rv = EXIT_INTERRUPTED
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def run_app(app: typer.Typer) -> Any:
    """Run the CLI. typer builds the options of every command before it runs one (~45 ms, a
    quarter of `predict one.png`): a command named on the command line is run from an app that
    holds it alone, with the same options, errors and exit codes; anything else (--help, no
    command, a misspelt one) goes to the whole app, which says what there is."""
    name = sys.argv[1] if len(sys.argv) > 1 else None
    chosen = [c for c in app.registered_commands if c.name == name]
    if not chosen:
        return app()
    one = typer.Typer(cls=OneLineErrors, name=app.info.name, add_completion=False,
                      pretty_exceptions_enable=False)  # fmt: skip
    one.registered_commands = chosen
    one.callback()(lambda: None)  # a group, so that the command keeps its name
    return one()


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    """Print one red line on stderr and return the Exit to raise."""
    render.error(message)
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Library errors and translated foreign ones become one red line and exit 2; Ctrl-C 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            render.interrupted()
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            if interrupted(exc):
                render.interrupted()
                raise typer.Exit(EXIT_INTERRUPTED) from None
            known = translate(exc)
            if known is None:
                raise  # a bug: keep the traceback
            raise fail(str(known)) from None

    return wrapper  # type: ignore[return-value]


# --- from option values to library arguments ---------------------------------------------------
def opt_str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def csv_values(text: str, flag: str, kind: type = int) -> tuple:
    """ "1,8,64" -> (1, 8, 64); a value that does not parse is a one-line usage error."""
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise fail(f"{flag} takes comma-separated values, got {text!r}") from None


def verify_config(reference: Path | None, atol: float, rtol: float, threads: int | None = None,
                  backend: str | None = None, precision: str | None = None) -> Any:  # fmt: skip
    from .edge.parity import VerifyConfig

    return VerifyConfig(opt_str(reference), atol, rtol, threads, backend, precision)


def data_for(data_dir: Path | None, test_limit: int | None) -> Any:
    """The command's MNIST: each split read once, when first needed (workflow.Data)."""
    from .workflow import Data

    return Data(opt_str(data_dir), test_limit)


def finish(result: Any, json_path: Path | None, *verdicts: Any) -> None:
    """Write --json, then exit 1 with the problems of the result and of any further verdicts
    (a bench regression check), if any."""
    from .edge.files import write_json

    if json_path:
        write_json(json_path, result.to_dict())
        render.console.print(f"wrote {json_path}")
    problems = [p for r in (result, *verdicts) if r is not None and hasattr(r, "problems")
                for p in r.problems()]  # fmt: skip
    if problems:
        raise fail("; ".join(problems), EXIT_FAILED)


def quant_config(model: Path, output: Path | None, **kw: Any) -> Any:
    """QuantConfig for --model/--output (default: mnist_cnn.int8.onnx beside the model)."""
    from .edge.layout import Layout
    from .quantize import QuantConfig

    out = output or Layout.beside(model).int8
    return QuantConfig(model=str(model), output=str(out), **kw)
