"""Past one machine, on Ray (the `ray` extra): batch prediction with Ray Data, and the Open
Inference Protocol server as a Ray Serve deployment. Ray is imported only here, and only when
a command asks for it; nothing else in the package needs it.

Connecting (`connect`): an address given, else RAY_ADDRESS, joins that cluster; neither starts
a local instance for the command's lifetime. Ray's usage statistics stay off unless the user
set RAY_USAGE_STATS_ENABLED. Ray listens on every interface of a node whatever address it is
given (ray #26293): on a machine others can reach, run it inside a network namespace or behind
a firewall (docs/guides/ray-triton.md says how).

Batch prediction (`predict_on_ray`): the driver expands the inputs as `predict` does and sends
the paths; each actor works in the driver's folder, so every node must see the files at the same
paths (one machine, or a shared file system). Ray Data hands them out `batch_size` at a time to
a pool of actors. Each actor is one Predictor (the same model, backend, precision, resolved once
on the driver) whose engine threads equal the actor's num_cpus (Ray sets OMP_NUM_THREADS, which
ONNX Runtime ignores), and prepares its files with predict's image pipeline: an unreadable file
is an error row, never a failed task. Every row carries its input position; the driver keeps the
first answer for each position (a task that Ray retried after a lost worker answers again),
fails the job if any position has none, and returns and writes the rows in input order.

Serving (`serve_on_ray`): the same ASGI app as `mnist-edge serve` (serve.ModelServer, its
batcher included), one per replica, behind Ray Serve's HTTP proxy on cfg.host:cfg.port. A
replica loads its model before Serve routes to it, and reports unhealthy when it cannot answer.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import policy
from .errors import ClusterError, ConfigError, MnistEdgeError, missing_dependency
from .images import prepare_files
from .predict import PredictConfig, PredictSummary, collect, expand_inputs, open_predictor
from .runtime import FileResult
from .server import ModelServer, ServeConfig
from .server.app import build as build_app
from .server.config import split_model
from .server.models import check as check_models
from .threads import cores

APP_NAME = "mnist-edge"  # the Ray Serve application
DEPLOYMENT = "mnist-edge-oip"


@dataclass(frozen=True)
class RayConfig:
    """Where the cluster is and how the work is spread over it."""

    address: str | None = None  # None: RAY_ADDRESS when set, else a local instance
    cpus: int = 1  # CPUs each actor or replica takes: its engine threads
    actors: int | None = None  # batch actors (default: the cluster's CPUs // cpus)
    batch_size: int = policy.BATCH  # files per actor call
    replicas: int = 1  # serving replicas

    def __post_init__(self) -> None:
        for name in ("cpus", "batch_size", "replicas"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.actors is not None and self.actors < 1:
            raise ConfigError(f"actors must be at least 1, got {self.actors}")


def _import_ray() -> Any:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise missing_dependency("ray", "--ray") from None
    return ray


def connect(address: str | None) -> Any:
    """The ray module, connected: to `address`, else RAY_ADDRESS, else a local instance that
    lives until `disconnect`."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    target = address or os.environ.get("RAY_ADDRESS") or None
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}
    try:
        if target is not None:
            ray.init(address=target, **quiet)
        else:
            ray.init(num_cpus=cores(), include_dashboard=False, _node_ip_address="127.0.0.1",
                     **quiet)  # fmt: skip
        return ray
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        where = f"the Ray cluster at {target}" if target else "a local Ray instance"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ClusterError(f"cannot reach {where}: {first}") from None


def disconnect(ray: Any) -> None:
    """Leave the cluster (stopping the local instance, when this process started one)."""
    if ray.is_initialized():
        ray.shutdown()


DEFAULT_PREDICT, DEFAULT_RAY = PredictConfig(), RayConfig()


# --- batch prediction ------------------------------------------------------------------------
class _PredictActor:
    """One Ray Data actor: a Predictor, and predict's image pipeline for its files."""

    def __init__(self, cfg: PredictConfig, threads: int, top: int, cwd: str) -> None:
        try:  # the driver's folder: relative names then read, and fail, as in a local run
            os.chdir(cwd)
        except OSError:
            raise ClusterError(f"a Ray node cannot see the folder {cwd}: the files must be at "
                               "the same paths on every node") from None  # fmt: skip
        self.predictor, _ = open_predictor(cfg, threads, spin=False)
        self.top = top

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        files = [str(f) for f in batch["path"]]
        prepared = prepare_files(files, self.predictor.max_image_pixels)
        n, k = len(files), self.top
        labels = np.full((n, k), -1, dtype=np.int64)
        probs = np.zeros((n, k), dtype=np.float64)
        ok = [i for i, (digit, _) in enumerate(prepared) if digit is not None]
        if ok:
            pred = self.predictor.predict(np.stack([prepared[i][0] for i in ok]))
            for i, best in zip(ok, pred.top(k), strict=True):
                labels[i] = [c for c, _ in best]
                probs[i] = [p for _, p in best]
        errors = np.array([error or "" for _, error in prepared], dtype=object)
        return {"index": batch["index"], "labels": labels, "probs": probs, "error": errors}


def _row(file: str, labels: np.ndarray, probs: np.ndarray, error: str) -> FileResult:
    if error:
        return FileResult(file, error=error)
    best = [(int(c), float(p)) for c, p in zip(labels, probs, strict=True)]
    return FileResult(file, best[0][0], best[0][1], best)


def predict_on_ray(
    items: list[str],
    cfg: PredictConfig = DEFAULT_PREDICT,
    ray_cfg: RayConfig = DEFAULT_RAY,
    *,
    on_start: Callable[[PredictSummary], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_row: Callable[[FileResult], None] | None = None,
) -> PredictSummary:
    """`predict_paths` on a Ray cluster: the same rows, in input order (`on_row` hears them
    once the job is done, `on_progress` hears (rows, files) as answers come)."""
    paths = expand_inputs(items)
    threads = cfg.threads or ray_cfg.cpus
    # Resolved here, once: the model, backend and precision every actor then loads (its path
    # absolute, for a node whose folders differ), and a bad --model fails before Ray starts.
    local, source = open_predictor(cfg, 1, spin=False)
    actor_cfg = replace(cfg, model=str(local.path.resolve()), backend=local.backend,
                        precision=local.precision, profile=None, output=None)  # fmt: skip
    if not paths:  # nothing to hand out: no cluster to join
        summary = PredictSummary(str(local.path), source, local.runner.name, [], cfg.output)
        return collect(summary, [], cfg, on_row)
    ray = connect(ray_cfg.address)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = ray_cfg.actors or max(1, cpus // threads)
        summary = PredictSummary(str(local.path), source, local.runner.name, [], cfg.output,
                                 actors, threads, len(paths))  # fmt: skip
        if on_start:
            on_start(summary)
        rows = _run_job(ray, paths, actor_cfg, threads, ray_cfg, actors, on_progress)
    finally:
        disconnect(ray)
    return collect(summary, (rows[i] for i in range(len(paths))), cfg, on_row)


def _run_job(ray: Any, paths: list[Path], cfg: PredictConfig, threads: int, ray_cfg: RayConfig,
             actors: int, on_progress: Callable[[int, int], None] | None,
             ) -> dict[int, FileResult]:  # fmt: skip
    """Rows by input position, each exactly once."""
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its per-run INFO lines
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    items = [{"index": i, "path": str(p)} for i, p in enumerate(paths)]
    blocks = -(-len(items) // ray_cfg.batch_size)
    actors = min(actors, blocks)
    ds = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        _PredictActor,
        fn_constructor_kwargs={"cfg": cfg, "threads": threads, "top": cfg.top, "cwd": os.getcwd()},
        batch_size=ray_cfg.batch_size,
        batch_format="numpy",
        num_cpus=threads,
        compute=ray.data.ActorPoolStrategy(size=actors),
    )
    rows: dict[int, FileResult] = {}
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for j, index in enumerate(batch["index"].tolist()):
                if index not in rows:  # a retried task answers its rows again: keep one
                    rows[index] = _row(str(paths[index]), batch["labels"][j], batch["probs"][j],
                                       str(batch["error"][j]))  # fmt: skip
            if on_progress:
                on_progress(len(rows), len(paths))
    except MnistEdgeError:
        raise
    except Exception as exc:  # a RayTaskError carries the actor's own error
        cause = getattr(exc, "cause", None) or exc
        if isinstance(cause, MnistEdgeError):
            raise type(cause)(str(cause)) from None
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[-1]
        raise ClusterError(f"the Ray job failed: {first}") from None
    lost = len(paths) - len(rows)
    if lost:
        raise ClusterError(f"the Ray job answered {len(rows)} of {len(paths)} files; {lost} lost")
    return rows


# --- serving -----------------------------------------------------------------------------------
class _Replica:
    """One Ray Serve replica: a ModelServer, its model loaded before Serve routes to it."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.server = ModelServer(cfg)
        self.server.load()
        if self.server.load_error is not None:
            raise self.server.load_error

    def __serve_build_asgi_app__(self) -> Any:
        return build_app(self.server)

    def check_health(self) -> None:
        if not self.server.ready:
            raise ClusterError("the replica's model is not ready")


def deployment(cfg: ServeConfig, ray_cfg: RayConfig) -> Any:
    """The Ray Serve application: ray_cfg.replicas replicas of the OIP app, each taking
    ray_cfg.cpus CPUs for its engine threads."""
    _import_ray()
    from ray import serve

    threads = cfg.threads or ray_cfg.cpus
    models = tuple(_absolute_model(m, cfg.name) for m in cfg.models)
    replica_cfg = replace(cfg, threads=threads, web=_absolute(cfg.web), models=models,
                          profile=_absolute(cfg.profile),
                          repository=_absolute(cfg.repository))  # fmt: skip
    cls = serve.deployment(
        name=DEPLOYMENT,
        num_replicas=ray_cfg.replicas,
        ray_actor_options={"num_cpus": threads},
        max_ongoing_requests=max(1, cfg.max_connections // ray_cfg.replicas),
        health_check_period_s=2,
        health_check_timeout_s=10,
    )(serve.ingress()(_Replica))
    return cls.bind(replica_cfg)


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).absolute())


def _absolute_model(value: str, default_name: str) -> str:
    name, path = split_model(value, default_name)
    return f"{name}={_absolute(path)}"


def serve_on_ray(
    cfg: ServeConfig,
    ray_cfg: RayConfig = DEFAULT_RAY,
    on_start: Callable[[str], None] | None = None,
    on_ready: Callable[[str, int], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Deploy the OIP app on Ray Serve and keep it up until SIGTERM or Ctrl-C (or `stop`);
    then Serve drains its replicas and shuts down, and a local instance stops."""
    if cfg.port == 0:
        raise ConfigError("Ray Serve needs a port number: --port 0 works without --ray only")
    check_models(cfg)  # a model that cannot load fails here, in one line
    ray = connect(ray_cfg.address)
    stop = stop or threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        from ray import serve

        url = f"http://{cfg.host}:{cfg.port}/"
        if on_start:
            on_start(url)
        serve.start(http_options={"host": cfg.host, "port": cfg.port}, logging_config={
            "log_level": "WARNING", "enable_access_log": cfg.verbose})  # fmt: skip
        try:
            serve.run(deployment(cfg, ray_cfg), name=APP_NAME, route_prefix="/",
                      blocking=False)  # fmt: skip
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ClusterError(f"Ray Serve could not deploy the model: {first}") from None
        if on_ready:
            on_ready(url, ray_cfg.replicas)
        while not stop.wait(0.2):
            pass
        serve.shutdown()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        disconnect(ray)


def replica_pids(ray: Any) -> list[int]:
    """The process ids of the serving replicas that are alive (for fault tests and tools)."""
    from ray.util.state import list_actors

    return [a.pid for a in list_actors(filters=[("state", "=", "ALIVE")])
            if a.class_name.startswith("ServeReplica") and DEPLOYMENT in a.class_name
            and a.pid]  # fmt: skip


__all__ = ["RayConfig", "connect", "predict_on_ray", "serve_on_ray", "deployment",
           "replica_pids"]  # fmt: skip
