"""The measured tables of the README and the documentation site, made from the results files:
never typed by hand.

A table lives in README.md or a page under docs/ between `<!-- table: NAME -->` and
`<!-- /table -->`; NAME is one of TABLES below, each rendered from files in benchmarks/results/
together with the CPU, the command and the date it was measured with. `--write` puts the
current renderings in the pages; `--check` (tests/test_readme_tables.py runs it) fails when a
table differs from its results file or a results file lacks its CPU.

    python benchmarks/readme_tables.py --write | --check
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# Files written before the scripts recorded their command: the script that wrote each (its
# docstring names the file), said as such under the table.
WRITTEN_BY = {
    "pretrained.json": "python benchmarks/pretrained.py",
    "train_full.json": "python benchmarks/train_full.py --lr-schedule cosine --augment",
    "train_default.json": "python benchmarks/train_full.py",
    "trainer_overhead.json": "python benchmarks/trainer_overhead.py",
    "bench_full.json": "mnist-edge bench --model exports/train_full/mnist_cnn.onnx "
    "--checkpoint exports/train_full/mnist_cnn.pt --duration 3",
    "bench_overhead.json": "mnist-edge bench --backends pytorch,onnxruntime --batch-sizes 1 "
    "--threads 1,2 --duration 10",
    "bench_edge.json": "mnist-edge bench --model mnist_edge/edge/models/mnist_cnn.onnx "
    "--checkpoint <its checkpoint> --batch-sizes 1,64 --duration 2 --scenario all --qps 200 "
    "--latency-bound-ms 10",
    "int8_consistency_full_range.json": "python benchmarks/int8_consistency.py (8-bit weights)",
    "ort_tuning.json": "python benchmarks/ort_tuning.py",
    "tune.json": "mnist-edge tune --model <folder>/mnist_cnn.onnx --duration 2 "
    "--json benchmarks/results/tune.json",
    "int8_consistency.json": "python benchmarks/int8_consistency.py",
    "int8_variants.json": "python benchmarks/int8_variants.py",
    "ddp_throughput.json": "python benchmarks/ddp_throughput.py",
    "realworld.json": "python benchmarks/realworld.py "
    "--model mnist_edge/edge/models/mnist_cnn.onnx --per-group 500",
    "realworld_lowres_before.json": "python benchmarks/realworld.py --per-group 500 "
    "--out benchmarks/results/realworld_lowres_before.json",
    "realworld_lowres_after.json": "python benchmarks/realworld.py --per-group 500 "
    "--out benchmarks/results/realworld_lowres_after.json",
    "web.json": "make web-deps && python benchmarks/web.py --calls 300",
    "predict_memory.json": "python benchmarks/predict_memory.py "
    "--model mnist_edge/edge/models/mnist_cnn.onnx",
    "predict_folder.json": "python benchmarks/predict_folder.py "
    "--model mnist_edge/edge/models/mnist_cnn.onnx",
    "predict_folder_84px.json": "python benchmarks/predict_folder.py --scale 3 --limit 3000",
    "data_once.json": "python benchmarks/data_once.py --before <1bc4eb3 checkout>",
    "cold_start.json": "python benchmarks/cold_start.py",
    "ctrl_c_probe.json": "python benchmarks/ctrl_c_probe.py --checkpoint ...",
    "ray.json": "python benchmarks/ray.py",
    "arm.json": "make check-arm (benchmarks/arm.py)",
}
# Files that do not record their date: the day of the commit that added each.
DATED = {"tune.json": "2026-12-02 (the day of its commit)"}
BLOCK = re.compile(r"(<!-- table: ([\w-]+) -->\n)(.*?)(<!-- /table -->)", re.S)
NAMES = {"onnxruntime": "ONNX Runtime", "executorch": "ExecuTorch", "litert": "LiteRT"}


def load(name: str) -> dict:
    """A results file, refused when it does not say which CPU it was measured on (its
    `measured_on`, or for files written before that key, the CPU in its `environment`)."""
    data = json.loads((RESULTS / name).read_text())
    if "measured_on" not in data and data.get("machine"):  # mnist-edge tune's report
        data["measured_on"] = data["machine"]
    cpu = data.get("measured_on") or {}
    if "measured_on" not in data and (data.get("environment") or {}).get("cpu_flags"):
        env = data["environment"]
        cpu = data["measured_on"] = {"cpu": env.get("cpu"), "cpu_flags": env["cpu_flags"]}
    if not cpu.get("cpu") or not cpu.get("cpu_flags"):
        raise ValueError(f"benchmarks/results/{name} does not name its CPU (model and flags)")
    if not data.get("command") and name in WRITTEN_BY:
        data["command"] = WRITTEN_BY[name] + " (as its section of the notebook recorded it)"
    if not (data.get("finished") or data.get("created")) and name in DATED:
        data["finished"] = DATED[name]
    return data


def cpu_of(data: dict) -> str:
    cpu = data["measured_on"]
    return f"{cpu['cpu']} ({', '.join(cpu['cpu_flags'])})"


def source(name: str, data: dict) -> str:
    """The line under a table: where its numbers come from."""
    cpu = data["measured_on"]
    command = data.get("command", "")
    cores = (data.get("environment") or {}).get("cores") or data.get("cores")
    cores = f", {cores} cores" if cores else ""
    when = data.get("finished") or data.get("created") or ""
    when = f", {when[:10]}" if when else ""
    return (
        f"\n*{cpu['cpu']}{cores} ({', '.join(cpu['cpu_flags'])})"
        f"; `{command}`{when}; `benchmarks/results/{name}`.*\n"
    )


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| --- |" + " ---: |" * (len(headers) - 1)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def runtimes_speed() -> str:
    d = load("runtimes.json")
    rows = [
        [
            NAMES[r["runtime"]],
            r["precision"],
            str(r["threads"]),
            str(r["batch"]),
            f"{r['runner_p50_ms']:.3f}",
            f"{r['bare_p50_ms']:.3f}",
            f"{r['ratio']:.3f}",
            f"{r['runner_images_per_s']:,.0f}",
        ]
        for r in sorted(d["rows"], key=lambda r: (r["precision"], r["threads"], r["batch"]))
    ]
    head = [
        "runtime",
        "precision",
        "threads",
        "batch",
        "runner p50 ms",
        "bare p50 ms",
        "runner / bare",
        "images/s",
    ]
    return table(head, rows) + source("runtimes.json", d)


def runtimes_tune() -> str:
    d = load("runtimes.json")
    rows = []
    for threads, pick in d["tune"].items():
        ranked = {t["name"]: t for t in pick["ranked"]}
        best = ranked.get(pick["best"] or "", {})
        rows.append([threads, pick["best"] or "nothing passed",
                     f"{best.get('p50_ms', float('nan')):.3f}",
                     ", ".join(f"{t['name']} {t['p50_ms']:.3f}" for t in pick["ranked"][1:4]
                               if t["passed"])])  # fmt: skip
    return table(["threads", "tune picks", "its batch-1 p50 ms", "next (p50 ms)"], rows) + source(
        "runtimes.json", d
    )


def int8_agreement() -> str:
    d = load("int8_agreement.json")
    rows = [[r["a"], r["b"], f"{r['agreement']:.2f}%", str(r["differing"])] for r in d["pairs"]]
    acc = ", ".join(f"{k} {v:.2f}%" for k, v in d["accuracy"].items())
    return (
        table(["model", "against", "same answer", "digits answered otherwise"], rows)
        + f"\nAccuracy on the {d['images']:,} test digits: {acc}.\n"
        + source("int8_agreement.json", d)
    )


def runtime_sizes() -> str:
    d = load("runtime_sizes.json")
    rows = []
    for name, r in d["runtimes"].items():
        rows.append(
            [
                NAMES[name],
                f"{r['model_bytes']['fp32']:,}",
                f"{r['model_bytes']['int8']:,}",
                f"{r['own_libraries_mb']:.1f} MB ({len(r['own_libraries'])} files)",
                f"{r['site_packages_libraries_mb']:,.1f} MB",
                ", ".join(f"{k} {v:,.0f} MB" for k, v in r["installed_mb"].items()),
            ]
        )
    head = [
        "runtime",
        "fp32 model bytes",
        "INT8 model bytes",
        "its native libraries, loaded",
        "all native libraries loaded from site-packages",
        "installed (pip)",
    ]
    return table(head, rows) + source("runtime_sizes.json", d)


def int8_consistency_runtimes() -> str:
    d = load("int8_consistency_runtimes.json")
    rows = []
    for r in d["edge_runtimes"].values():
        e = r["emulated_haswell"]
        rows.append(
            [
                r["file"],
                f"{r['accuracy_native']:.2f}%",
                str(e["images"]),
                f"{e['argmax_agreement']:.2f}%",
                f"{e['max_abs_diff']:.3g}",
                str(e["rows_differing"]),
            ]
        )
    head = [
        "INT8 file",
        "accuracy here",
        "digits emulated",
        "argmax agreement, here vs Haswell",
        "max logit difference",
        "digits differing at all",
    ]
    return table(head, rows) + source("int8_consistency_runtimes.json", d)


def executorch_bound() -> str:
    d = load("executorch_bound.json")
    rows = []
    for r in d["rows"]:
        batch1 = (f"{r['batch1_mb']:,.0f}" if "batch1_mb" in r
                  else "fails: " + r.get("batch1_error", r.get("error", "?"))[:60])  # fmt: skip
        full = (
            f"{r['full_batch_mb']:,.0f}"
            if "full_batch_mb" in r
            else "-"
            if "batch1_mb" not in r
            else "fails: " + r.get("full_batch_error", "?")
        )
        rows.append(
            [
                f"{r['bound']:,}",
                f"{r['loaded_mb']:,.0f}" if "loaded_mb" in r else "-",
                batch1,
                full,
                f"{r['batch64_images_per_s']:,.0f}" if "batch64_images_per_s" in r else "-",
            ]
        )
    head = [
        "batch bound",
        "peak RSS loaded, MB",
        "after batch 1",
        "after a batch of the bound",
        "batch-64 images/s",
    ]
    return table(head, rows) + source("executorch_bound.json", d)


def extras_size() -> str:
    d = load("extras_size.json")
    rows = [
        [
            r["set"],
            f"`.[{r['extras']}]`" if r["extras"] else "`.`",
            f"{r['mb']:,.0f} MB",
            f"{r['seconds']:.0f} s",
        ]
        for r in d["rows"]
    ]
    return table(["install", "pip install", "venv size", "install time"], rows) + source(
        "extras_size.json", d
    )


def serve_protocols() -> str:
    d = load("serve.json")
    enc = {"json": "REST JSON", "binary": "REST binary", "grpc": "gRPC"}
    rows = [
        [c["model"], enc[c["encoding"]], str(c["concurrency"]), f"{c['rps']:,.0f}",
         f"{c['p50_ms']:.2f}", f"{c['p99_ms']:.2f}",
         f"{c['mean_batch']:.1f}" if "mean_batch" in c else "-", str(c["not_200"])]
        for c in d["cells"] if c["batching"] == "on"
    ]  # fmt: skip
    bare = "; ".join(f"bare {m}: batch-1 p50 {e['b1_p50_ms']:.3f} ms, batch-64 "
                     f"{e['b64_images_per_s']:,.0f} images/s"
                     for m, e in d["bare"].items())  # fmt: skip
    head = [
        "model",
        "protocol",
        "concurrency",
        "requests/s",
        "p50 ms",
        "p99 ms",
        "images per model call",
        "not OK",
    ]
    return table(head, rows) + f"\n{bare}.\n" + source("serve.json", d)


def json_codec() -> str:
    d = load("json_codec.json")
    us = d["us"]
    rows = [[name, f"{v:.1f}", f"{d['answer_bytes'][name]}"] for name, v in us.items()]
    return (table(["codec", "us per request parsed and answer written", "answer bytes"], rows)
            + f"\norjson {us['json'] / us['orjson']:.1f}x the standard library's speed; its "
            f"answers read back as the same float32: {d['answers_exact']}.\n"
            + source("json_codec.json", d))  # fmt: skip


def serve_peers() -> str:
    d = load("serve_peers.json")
    names = {"kserve": "KServe 0.21", "mlserver": "MLServer 1.7.1", "fastapi": "FastAPI tutorial",
             "mnist-edge": f"mnist-edge ({d['environment']['cores']} workers)"}  # fmt: skip
    rows = [[names.get(c["server"], c["server"]), c["encoding"], str(c["concurrency"]),
             f"{c['rps']:,.0f}", f"{c['p50_ms']:.2f}", f"{c['p99_ms']:.2f}", str(c["not_200"])]
            for c in d["cells"]]  # fmt: skip
    r = d["ratios"]
    line = (
        f"\nAt concurrency 64 mnist-edge serves {r['json_c64_vs_kserve']:.2f}x KServe's "
        f"requests/s with JSON and {r['binary_c64_vs_kserve']:.2f}x with binary tensors"
    )
    if "json_c64_vs_mlserver" in r:
        line += (f", and {r['json_c64_vs_mlserver']:.2f}x MLServer's with JSON; with one worker "
                 f"{r['json_c64_1_worker_vs_kserve']:.2f}x KServe and "
                 f"{r['json_c64_1_worker_vs_mlserver']:.2f}x MLServer")  # fmt: skip
    line += ".\n"
    head = ["server", "encoding", "concurrency", "requests/s", "p50 ms", "p99 ms", "not 200"]
    return table(head, rows) + line + source("serve_peers.json", d)


def serve_workers() -> str:
    d = load("serve_workers.json")
    enc = {"json": "REST JSON", "binary": "REST binary", "grpc": "gRPC"}
    rows = [[str(c["workers"]), enc[c["encoding"]], str(c["concurrency"]), f"{c['rps']:,.0f}",
             f"{c['p50_ms']:.2f}", f"{c['p99_ms']:.2f}", str(c["not_200"])]
            for c in d["cells"]]  # fmt: skip
    paper = [[enc[e], f"{p['per_worker_rps']:,.0f}", f"{p['scaling_vs_1_worker']:.2f}x",
              f"{p['expected_8_cores']:,.0f}", f"{p['expected_16_cores']:,.0f}"]
             for e, p in d["paper"].items()]  # fmt: skip
    head = ["workers", "protocol", "concurrency", "requests/s", "p50 ms", "p99 ms", "not OK"]
    return (table(head, rows) + "\nOn paper, from the per-worker figure (a worker and its one "
            "engine thread per core; the engine's limit is "
            f"{d['bare_b64_one_thread_images_per_s']:,.0f} images/s per thread at batch 64):\n\n"
            + table(["protocol", "requests/s per worker", f"{max(c['workers'] for c in d['cells'])}"
                     " workers over 1", "expected at 8 cores", "expected at 16 cores"], paper)
            + source("serve_workers.json", d))  # fmt: skip


def headline() -> str:
    """The front page's figures, each row from its own results file and naming its CPU."""
    rows = []
    pre = load("pretrained.json")
    ev = pre["evaluations"]
    rows.append(["the packaged model on the 10,000 official test digits",
                 f"{ev['onnx']['accuracy']:.2f}% fp32, {ev['onnx-int8']['accuracy']:.2f}% INT8",
                 cpu_of(pre), "`pretrained.json`"])  # fmt: skip
    ag = load("int8_agreement.json")
    pairs = [p for p in ag["pairs"] if p["a"].endswith("int8") and p["b"].endswith("int8")]
    rows.append(["INT8 ONNX Runtime, ExecuTorch and LiteRT agree with each other",
                 f"{min(p['agreement'] for p in pairs):.2f}-"
                 f"{max(p['agreement'] for p in pairs):.2f}"
                 "% of test digits", cpu_of(ag), "`int8_agreement.json`"])  # fmt: skip
    rt = load("runtimes.json")
    one = {(r["runtime"], r["precision"]): r for r in rt["rows"]
           if r["threads"] == 1 and r["batch"] == 1}  # fmt: skip
    rows.append(["batch-1 latency, 1 thread, ONNX Runtime fp32 / INT8",
                 f"{one[('onnxruntime', 'fp32')]['runner_p50_ms']:.2f} / "
                 f"{one[('onnxruntime', 'int8')]['runner_p50_ms']:.2f} ms p50",
                 cpu_of(rt), "`runtimes.json`"])  # fmt: skip
    peers = load("serve_peers.json")
    r = peers["ratios"]
    rows.append(["`mnist-edge serve`, JSON at concurrency 64, against KServe / MLServer",
                 f"{r['json_c64_vs_kserve']:.2f}x / {r['json_c64_vs_mlserver']:.2f}x their "
                 "requests/s", cpu_of(peers), "`serve_peers.json`"])  # fmt: skip
    sizes = load("extras_size.json")
    base = next(x for x in sizes["rows"] if not x["extras"])
    rows.append(["the edge install (no torch), a fresh venv", f"{base['mb']:,.0f} MB",
                 cpu_of(sizes), "`extras_size.json`"])  # fmt: skip
    return table(["what", "measured", "CPU (flags)", "benchmarks/results/"], rows)


# The measurements page's tables: each a results file's rows or facts, columns chosen here.
Column = tuple[str, str, str]  # (header, path in the row, format spec or "" for as is)


def get(data: Any, path: str) -> Any:
    """`data`'s value at `path`, its keys joined by "/"; None where it has none."""
    for part in path.split("/"):
        if isinstance(data, list):
            data = data[int(part)] if part.isdigit() and int(part) < len(data) else None
        elif isinstance(data, dict):
            data = data.get(part)
        else:
            return None
    return data


def cell(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if spec == "%":
        return f"{value:.2f}%"
    if isinstance(value, list):
        return ", ".join(cell(v, spec) for v in value)
    if isinstance(value, dict):
        return ", ".join(map(str, value))
    return format(value, spec) if spec else str(value)


def rows_table(name: str, path: str, columns: list[Column], key: str = "",
               where: Callable[[dict], bool] = lambda r: True) -> str:  # fmt: skip
    """The list (or dict of dicts: `key` heads the dict's keys) at `path`, a row each."""
    d = load(name)
    items = get(d, path)
    if isinstance(items, dict):
        items = [{"_key": k, **v} for k, v in items.items()]
        columns = [(key, "_key", ""), *columns]
    rows = [[cell(get(r, c[1]), c[2]) for c in columns] for r in items if where(r)]
    return table([c[0] for c in columns], rows) + source(name, d)


def facts_table(name: str, facts: list[Column]) -> str:
    """One figure a row: what it is, and its value."""
    d = load(name)
    rows = [[label, cell(get(d, path), spec)] for label, path, spec in facts]
    return table(["measure", "value"], rows) + source(name, d)


def ray_paper() -> str:
    """Batch throughput on N nodes of the measured size, on paper: Ray's 2-actor rate once it
    has joined (its wall time less the one-file join time), times N."""
    d = load("ray.json")
    rate = d["files"] / (
        d["batch_s"]["ray_2_actors"] - d["cold_start_s"]["predict_ray_join_one_file"]
    )
    local = d["batch_images_per_s"]["local"]
    rows = [
        [
            "1, no Ray (`predict FOLDER`)",
            f"{local * 3600 / 1e6:.1f} M",
            f"{1e6 / local / 60:.0f} min",
        ]
    ]
    for n in (1, 2, 8, 32):
        per_s = rate * n
        rows.append([f"{n}, Ray", f"{per_s * 3600 / 1e6:.1f} M", f"{1e6 / per_s / 60:.1f} min"])
    return table(
        ["nodes of this size", "images/hour", "1 million forms (after the start)"], rows
    ) + source("ray.json", d)


def _train(name: str) -> Callable[[], str]:
    return lambda: rows_table(name, "epochs", [
        ("epoch", "epoch", ""), ("train loss", "train_loss", ".4f"),
        ("test loss", "test_loss", ".4f"), ("test accuracy", "test_accuracy", "%"),
        ("images/s", "images_per_s", ",.0f"), ("seconds", "seconds", ",.0f")])  # fmt: skip


def _realworld(name: str) -> Callable[[], str]:
    return lambda: rows_table(name, "groups", [
        ("n", "n", ""), ("predict_image fp32", "predict_image fp32", "%"),
        ("predict_image INT8", "predict_image int8", "%"),
        ("plain pipeline fp32", "baseline fp32", "%"),
        ("plain pipeline INT8", "baseline int8", "%")], key="group")  # fmt: skip


def _folder(name: str) -> Callable[[], str]:
    return lambda: facts_table(name, [
        ("files", "files", ","), ("pixels (side)", "pixels", ""), ("workers", "workers", ""),
        ("threads", "threads", ""), ("files: images/s", "files_images_per_s", ",.0f"),
        ("arrays: images/s", "arrays_images_per_s", ",.0f"),
        ("peak RSS MB", "peak_rss_mb", ",.0f"), ("labels differing", "differ", "")])  # fmt: skip


MEASURED: dict[str, Callable[[], str]] = {
    "train-lowres": _train("train_lowres.json"),
    "train-full": _train("train_full.json"),
    "trainer-overhead": lambda: facts_table("trainer_overhead.json", [
        ("trainer images/s (runs)", "trainer_images_per_s", ",.0f"),
        ("bare loop images/s (runs)", "bare_loop_images_per_s", ",.0f"),
        ("ratio of medians", "ratio_of_medians", ".3f"), ("target", "target", "")]),
    "ddp": lambda: rows_table("ddp_throughput.json", "rows", [
        ("images/s", "images_per_s", ",.0f"), ("train s", "train_seconds", ",.0f"),
        ("test accuracy", "test_accuracy", "%")], key="layout"),
    "bench-full": lambda: rows_table("bench_full.json", "cases", [
        ("backend", "backend", ""), ("threads", "threads", ""), ("batch", "batch_size", ""),
        ("p50 ms", "p50_ms", ".3f"), ("p99 ms", "p99_ms", ".3f"),
        ("images/s", "throughput", ",.0f"), ("vs eager", "p50_vs_eager", ".2f"),
        ("roofline", "roofline_fraction", ".0%"), ("cold start ms", "cold_start_ms", ".0f")],
        where=lambda r: r["batch_size"] in (1, 64)),
    "bench-overhead": lambda: rows_table("bench_overhead.json", "overhead", [
        ("threads", "threads", ""), ("predict p50 ms", "predict_p50_ms", ".3f"),
        ("session.run p50 ms", "session_run_p50_ms", ".3f"),
        ("overhead", "overhead_pct", ".1f")]),
    "ort-tuning": lambda: rows_table("ort_tuning.json", "rows", [
        ("variant", "variant", ""), ("threads", "threads", ""), ("batch", "batch_size", ""),
        ("p50 ms", "p50_ms", ".3f"), ("images/s", "throughput", ",.0f"),
        ("roofline", "roofline_fraction", ".0%")]),
    "tune": lambda: rows_table("tune.json", "ranked", [
        ("candidate", "name", ""), ("threads", "threads", ""), ("passed", "passed", ""),
        ("accuracy", "accuracy", "%"), ("agreement", "argmax_agreement", "%"),
        ("p50 ms", "p50_ms", ".3f"), ("images/s", "images_per_s", ",.0f")]),
    "int8-consistency": lambda: rows_table("int8_consistency.json", "pairs", [
        ("a", "a", ""), ("b", "b", ""), ("images", "images", ","),
        ("agreement", "argmax_agreement", "%"), ("max abs diff", "max_abs_diff", ".3g")]),
    "int8-consistency-full-range": lambda: rows_table("int8_consistency_full_range.json", "pairs", [
        ("a", "a", ""), ("b", "b", ""), ("images", "images", ","),
        ("agreement", "argmax_agreement", "%"), ("max abs diff", "max_abs_diff", ".3g")]),
    "int8-consistency-runs": lambda: rows_table("int8_consistency.json", "runs", [
        ("how", "how", ""), ("accuracy", "accuracy", "%"), ("images", "images", ","),
        ("seconds", "seconds", ".0f")], key="run"),
    "int8-variants": lambda: rows_table("int8_variants.json", "rows", [
        ("variant", "variant", ""), ("bytes", "bytes", ","), ("accuracy", "accuracy", "%"),
        ("drop", "accuracy_drop", ".2f"), ("agreement", "argmax_agreement", "%"),
        ("b1 speed-up", "b1_speedup", ".2f"), ("b64 speed-up", "b64_speedup", ".2f")]),
    "realworld": _realworld("realworld.json"),
    "realworld-lowres-before": _realworld("realworld_lowres_before.json"),
    "realworld-lowres-after": _realworld("realworld_lowres_after.json"),
    "web": lambda: rows_table("web.json", "latency", [
        ("p50 ms", "p50_ms", ".3f"), ("p90 ms", "p90_ms", ".3f"), ("calls", "calls", ",.0f")],
        key="where"),
    "web-paths": lambda: rows_table("web.json", "paths/paths", [
        ("runs", "runs", ""), ("fp32 p50 ms", "fp32/p50_ms", ".2f"),
        ("INT8 p50 ms", "int8/p50_ms", ".2f"), ("fp32 / native 1 thread", "fp32_vs_native_1thread",
                                                 ".2f"),
        ("longest stall over 100 calls, ms", "longest_frame_gap_ms", ",.0f")], key="path"),
    "web-probes": lambda: rows_table("web.json", "probes_1thread", [
        ("page p50 ms", "page_p50_ms", ".3f"), ("native p50 ms", "native_1thread_p50_ms", ".3f"),
        ("page / native", "ratio", ".2f"), ("page GFLOP/s", "page_gflops", ".1f"),
        ("native GFLOP/s", "native_gflops", ".1f")], key="probe, one thread"),
    "serve-tls": lambda: rows_table("serve_tls.json", "cells", [
        ("mode", "mode", ""), ("encoding", "encoding", ""), ("keep-alive", "keepalive", ""),
        ("concurrency", "concurrency", ""), ("requests/s", "rps", ",.0f"),
        ("p50 ms", "p50_ms", ".2f"), ("p99 ms", "p99_ms", ".2f"), ("not 200", "not_200", "")]),
    "serve-tracing": lambda: rows_table("serve_tracing.json", "cells", [
        ("tracing", "mode", ""), ("encoding", "encoding", ""), ("concurrency", "concurrency", ""),
        ("requests/s", "rps", ",.0f"), ("p50 ms", "p50_ms", ".2f"), ("p99 ms", "p99_ms", ".2f"),
        ("not 200", "not_200", ""), ("exit s", "stop_s", ".1f")]),
    "serve-warmup": lambda: rows_table("serve_warmup.json", "engine", [
        ("model", "model", ""), ("warm-up", "warm_up", ""), ("first b1 ms", "first_b1_ms", ".2f"),
        ("then b1 ms", "steady_b1_ms", ".2f"), ("first b64 ms", "first_b64_ms", ".2f"),
        ("then b64 ms", "steady_b64_ms", ".2f")]),
    "serve-warmup-server": lambda: facts_table("serve_warmup.json", [
        ("first request after readiness, ms (median of fresh servers)", "server/first_request_ms",
         ".2f"),
        ("then the first request of a second connection, ms",
         "server/second_connection_first_ms", ".2f"),
        ("the requests after it, ms", "server/steady_request_ms", ".2f")]),
    "packaged-accuracy": lambda: rows_table("pretrained.json", "evaluations", [
        ("test images", "n", ","), ("accuracy", "accuracy", "%"), ("test loss", "loss", ".4f")],
        key="packaged file"),
    "predict-memory": lambda: rows_table("predict_memory.json", "rows", [
        ("max batch", "max_batch", ","), ("peak RSS MB", "peak_rss_mb", ",.0f"),
        ("seconds", "seconds", ".2f"), ("images/s", "images_per_s", ",.0f")]),
    "predict-folder": _folder("predict_folder.json"),
    "predict-folder-84px": _folder("predict_folder_84px.json"),
    "data-once": lambda: rows_table("data_once.json", "commands", [
        ("before: median s", "before/median_s", ".1f"),
        ("before: MNIST reads", "before/mnist_file_reads", ""),
        ("after: median s", "after/median_s", ".1f"),
        ("after: MNIST reads", "after/mnist_file_reads", "")], key="command"),
    "cold-start": lambda: facts_table("cold_start.json", [
        ("first answer in a new process, median ms", "median_ms", ".0f"),
        ("the CLI's, median ms", "cli_median_ms", ".0f"),
        ("bare python, median ms", "bare_python_median_ms", ".0f")]),
    "ctrl-c": lambda: rows_table("ctrl_c_probe.json", "commands", [
        ("interrupted", "counts/interrupted", ""), ("ended on its own", "counts/ended", ""),
        ("finished", "counts/finished", ""), ("other", "counts/other", "")], key="command"),
    "ray": lambda: facts_table("ray.json", [
        ("ray start, s", "cold_start_s/ray_start", ".1f"),
        ("serve: first answer, s", "cold_start_s/serve to first answer", ".2f"),
        ("serve --ray, 1 replica: first answer, s", "cold_start_s/serve --ray x1 to first answer",
         ".1f"),
        ("batch: local images/s", "batch_images_per_s/local", ",.0f"),
        ("batch: Ray, 1 actor, images/s", "batch_images_per_s/ray_1_actors", ",.0f"),
        ("batch: Ray, 2 actors, images/s", "batch_images_per_s/ray_2_actors", ",.0f"),
        ("idle memory MB", "idle_memory/rss_mb", ",.0f"),
        ("a replica killed: transport errors", "replica_killed/transport_errors", ""),
        ("a replica killed: replaced after s", "replica_killed/replaced_after_s", ".1f")]),
    "ray-paper": ray_paper,
    "ray-serving": lambda: rows_table("ray.json", "serving", [
        ("server", "server", ""), ("encoding", "encoding", ""), ("concurrency", "concurrency", ""),
        ("requests/s", "rps", ",.0f"), ("p50 ms", "p50_ms", ".1f"), ("p99 ms", "p99_ms", ".1f"),
        ("not 200", "not_200", "")]),
    "arm": lambda: rows_table("arm.json", "comparisons", [
        ("images", "images", ""), ("max abs diff", "max_abs_diff", ".3g"),
        ("agreement", "argmax_agreement", "%"), ("accuracy arm64", "accuracy_arm", "%"),
        ("accuracy x86", "accuracy_x86", "%"), ("parity", "parity_passed", "")], key="model"),
    "bench-scenarios": lambda: rows_table("bench_edge.json", "scenarios", [
        ("scenario", "scenario", ""), ("threads", "threads", ""), ("what", "summary", "")]),
}  # fmt: skip


TABLES: dict[str, Callable[[], str]] = {
    "headline": headline,
    "serve-workers": serve_workers,
    "serve-peers": serve_peers,
    "json-codec": json_codec,
    "serve-protocols": serve_protocols,
    "extras-size": extras_size,
    "executorch-bound": executorch_bound,
    "runtimes-speed": runtimes_speed,
    "runtimes-tune": runtimes_tune,
    "int8-agreement": int8_agreement,
    "runtime-sizes": runtime_sizes,
    "int8-consistency-runtimes": int8_consistency_runtimes,
    **MEASURED,
}


def render(text: str) -> str:
    """`text` with every table block replaced by its rendering (unknown names are an error)."""

    def one(m: re.Match) -> str:
        if m.group(2) not in TABLES:
            raise ValueError(f"a page names a table nobody renders: {m.group(2)}")
        return m.group(1) + TABLES[m.group(2)]() + m.group(4)

    return BLOCK.sub(one, text)


def pages() -> list[Path]:
    """Every page that may hold a table: the README and the site's pages."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true")
    p.add_argument("--check", action="store_true")
    a = p.parse_args()
    stale = []
    for page in pages():
        text = page.read_text()
        new = render(text)
        if a.write and new != text:
            page.write_text(new)
        if new != text:
            stale.append(str(page.relative_to(ROOT)))
        if a.write and BLOCK.search(new):
            print(f"{page.relative_to(ROOT)}: {len(BLOCK.findall(new))} tables rendered")
    if stale and not a.write:
        sys.exit(
            f"{', '.join(stale)}: tables differ from benchmarks/results/: run "
            "python benchmarks/readme_tables.py --write"
        )


if __name__ == "__main__":
    main()
