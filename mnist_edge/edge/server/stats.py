"""The statistics extension: per model and version, counts and cumulative times in Triton's
shape (`GET /v2/models[/{m}[/versions/{v}]]/stats`, gRPC ModelStatistics), read back from the
counters that metrics.ModelStats writes, so that with several workers the figures are every
worker's added up (prometheus-client's multiprocess files), whichever worker answers.

What each duration covers here (Triton's names; nanoseconds, cumulative):
- success: a request answered, from its arrival (before its body is read) to its reply made;
- fail: a request that reached a model and got an error (bad input, full queue, timeout);
- queue: waiting for its model call (0 for a request run at once, alone in the server);
- compute_input: parsing its tensors, decoding its image files, joining its batch;
- compute_infer: the model call of its batch (each request of a batch counts the whole call,
  as Triton counts it);
- compute_output: turning its rows into the reply.
The counts of queue and compute_* are those of success: they are recorded for answered
requests. Per batch size, `batch_stats` counts model calls and their cumulative times (joining
the input, the model, handing the answers back). cache_hit and cache_miss are 0: there is no
response cache.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .metrics import BATCH_STATS, REQUEST_STATS, ServerMetrics

NS = 1_000_000_000


def _ns(seconds: float) -> int:
    return max(0, round(seconds * NS))


def _duration(count: float, seconds: float) -> dict[str, int]:
    return {"count": int(count), "ns": _ns(seconds)}


def _samples(metrics: ServerMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of the statistics' series."""
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in metrics.collect():
        if not family.name.startswith("mnist_edge_stat_"):
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            out[sample.name].append((sample.labels, sample.value))
    return out


def report(metrics: ServerMetrics, names: list[str], version: str | None = None) -> dict[str, Any]:
    """`{"model_stats": [...]}` for every version of the models in `names` that has recorded
    anything (or is loaded: its series start at zero), or only `version` when given."""
    samples = _samples(metrics)
    wanted = set(names)
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def row(labels: dict[str, str]) -> dict[str, Any] | None:
        key = (labels.get("model", ""), labels.get("version", ""))
        if key[0] not in wanted or (version is not None and key[1] != version):
            return None
        if key not in rows:
            rows[key] = {"seconds": defaultdict(float), "requests": defaultdict(float),
                         "images": 0.0, "last": 0.0,
                         "batches": defaultdict(lambda: defaultdict(float))}  # fmt: skip
        return rows[key]

    for labels, value in samples["mnist_edge_stat_seconds_total"]:
        if (r := row(labels)) is not None:
            r["seconds"][labels["stat"]] += value
    for labels, value in samples["mnist_edge_stat_requests_total"]:
        if (r := row(labels)) is not None:
            r["requests"][labels["stat"]] += value
    for labels, value in samples["mnist_edge_stat_inferences_total"]:
        if (r := row(labels)) is not None:
            r["images"] += value
    for labels, value in samples["mnist_edge_stat_last_inference_ms"]:
        if (r := row(labels)) is not None:
            r["last"] = max(r["last"], value)
    for labels, value in samples["mnist_edge_stat_batch_calls_total"]:
        if (r := row(labels)) is not None:
            r["batches"][int(labels["batch_size"])]["calls"] += value
    for labels, value in samples["mnist_edge_stat_batch_seconds_total"]:
        if (r := row(labels)) is not None:
            r["batches"][int(labels["batch_size"])][labels["stat"]] += value

    stats = []
    for (name, ver), r in sorted(rows.items()):
        ok, seconds = r["requests"]["success"], r["seconds"]
        inference = {k: _duration(ok, seconds[k]) for k in REQUEST_STATS}
        inference["fail"] = _duration(r["requests"]["fail"], seconds["fail"])
        inference["cache_hit"] = inference["cache_miss"] = _duration(0, 0.0)
        batches = [
            {"batch_size": size,
             **{k: _duration(b["calls"], b[k]) for k in BATCH_STATS}}
            for size, b in sorted(r["batches"].items()) if b["calls"]
        ]  # fmt: skip
        stats.append({
            "name": name, "version": ver, "last_inference": int(r["last"]),
            "inference_count": int(r["images"]),
            "execution_count": int(sum(b["calls"] for b in r["batches"].values())),
            "inference_stats": inference, "batch_stats": batches, "memory_usage": [],
        })  # fmt: skip
    return {"model_stats": stats}


__all__ = ["report"]
