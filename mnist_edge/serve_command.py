"""`mnist-edge serve`: its options, and the one call that serves (edge/server/). Registered on
the app by cli.py; apart from it because a server has many limits, each a flag."""

from __future__ import annotations

from . import options as o
from . import render
from .edge import policy


def serve_cmd(
    folder: o.WebFolder = None,
    model: o.ServeModels = None,
    model_repository: o.ModelRepository = None,
    backend: o.Backend = None,
    precision: o.Precision = None,
    threads: o.Threads = None,
    profile: o.Profile = None,
    host: o.Host = "127.0.0.1",
    port: o.Port = 8000,
    grpc: o.Grpc = True,
    grpc_port: o.GrpcPort = None,
    workers: o.ServeWorkers = None,
    name: o.ModelName = "mnist",
    max_batch: o.MaxBatch = policy.SERVE_MAX_BATCH,
    max_delay: o.MaxDelay = policy.SERVE_MAX_DELAY_US,
    max_queue: o.MaxQueue = policy.SERVE_MAX_QUEUE,
    max_body: o.MaxBody = policy.SERVE_MAX_BODY,
    max_request_images: o.MaxRequestImages = policy.SERVE_MAX_REQUEST_IMAGES,
    max_connections: o.MaxConnections = policy.SERVE_MAX_CONNECTIONS,
    timeout: o.Timeout = policy.SERVE_TIMEOUT_S,
    verbose: o.Verbose = False,
    ray: o.UseRay = False,
    ray_address: o.RayAddress = None,
    replicas: o.Replicas = 1,
) -> None:
    """Serve models over the Open Inference Protocol (KServe V2, Triton), REST and gRPC, with
    dynamic batching, and a web export beside it, until Ctrl-C or SIGTERM (then drain, exit 0).
    SIGHUP, or POST /v2/repository/models/NAME/load, reloads models without a lost request.
    With --ray, the same app as a Ray Serve deployment of --replicas replicas (each --threads
    engine threads, 1 by default; REST only)."""
    from .edge.server import ServeConfig, default_web, serve
    from .edge.server.batcher import BatchConfig
    from .edge.server.workers import default_workers

    cfg = ServeConfig(
        tuple(model or ()), o.opt_str(model_repository), backend, precision, threads,
        o.opt_str(profile), default_web(o.opt_str(folder)), name, host=host, port=port,
        grpc=grpc, grpc_port=grpc_port,
        workers=1 if ray or ray_address else workers or default_workers(threads),
        batch=BatchConfig(max_batch, max_delay, max_queue), max_body=max_body,
        max_request_images=max_request_images, max_connections=max_connections,
        timeout_s=timeout, verbose=verbose,
    )  # fmt: skip
    if ray or ray_address:
        from .edge.cluster import RayConfig, serve_on_ray

        ray_cfg = RayConfig(ray_address, cpus=threads or 1, replicas=replicas)
        serve_on_ray(cfg, ray_cfg, on_start=render.serving_on_ray, on_ready=render.ray_ready)
    else:
        serve(cfg, on_start=render.serving, on_ready=render.serve_ready)
    render.console.print("stopped")
