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
    api_key: o.ApiKeys = None,
    api_key_file: o.ApiKeyFile = None,
    admin_key: o.AdminKeys = None,
    admin_key_file: o.AdminKeyFile = None,
    protect_metrics: o.ProtectMetrics = False,
    insecure: o.Insecure = False,
    tls_cert: o.TlsCert = None,
    tls_key: o.TlsKey = None,
    tls_client_ca: o.TlsClientCa = None,
    trace: o.Trace = False,
    ray: o.UseRay = False,
    ray_address: o.RayAddress = None,
    replicas: o.Replicas = 1,
) -> None:
    """Serve models over the Open Inference Protocol (KServe V2, Triton), REST and gRPC, with
    dynamic batching, and a web export beside it, until Ctrl-C or SIGTERM (then drain, exit 0).
    SIGHUP, or POST /v2/repository/models/NAME/load, reloads models without a lost request.
    --api-key protects the inference API and --admin-key model management (health stays open);
    an address other than loopback needs an --api-key, or --insecure. --tls-cert and
    --tls-key serve REST and gRPC over TLS (--tls-client-ca: clients need certificates too).
    --trace exports OpenTelemetry spans of each request as the OTEL_* variables say.
    With --ray, the same app as a Ray Serve deployment of --replicas replicas (each --threads
    engine threads, 1 by default; REST only)."""
    from .edge.server import ServeConfig, default_web, serve
    from .edge.server.auth import ENV_ADMIN_KEYS, ENV_API_KEYS, read_keys
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
        api_keys=read_keys(api_key or (), o.opt_str(api_key_file), ENV_API_KEYS, "--api-key"),
        admin_keys=read_keys(admin_key or (), o.opt_str(admin_key_file), ENV_ADMIN_KEYS,
                             "--admin-key"),
        protect_metrics=protect_metrics, insecure=insecure, tls_cert=o.opt_str(tls_cert),
        tls_key=o.opt_str(tls_key), tls_client_ca=o.opt_str(tls_client_ca), trace=trace,
    )  # fmt: skip
    if ray or ray_address:
        from .edge.cluster import RayConfig, serve_on_ray
        from .edge.errors import ConfigError

        if tls_cert:
            raise ConfigError("--tls-cert does not apply with --ray: Ray Serve's proxy answers "
                              "the clients (put TLS in front of it)")  # fmt: skip
        if trace:
            raise ConfigError("--trace does not apply with --ray: Ray Serve traces its own "
                              "requests (its tracing hook)")  # fmt: skip

        ray_cfg = RayConfig(ray_address, cpus=threads or 1, replicas=replicas)
        serve_on_ray(cfg, ray_cfg, on_start=render.serving_on_ray, on_ready=render.ray_ready)
    else:
        serve(cfg, on_start=render.serving, on_ready=render.serve_ready)
    render.console.print("stopped")
