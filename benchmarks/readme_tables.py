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

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# Files written before the scripts recorded their command: the script that wrote each (its
# docstring names the file), said as such under the table.
WRITTEN_BY = {"pretrained.json": "python benchmarks/pretrained.py"}
BLOCK = re.compile(r"(<!-- table: ([\w-]+) -->\n)(.*?)(<!-- /table -->)", re.S)
NAMES = {"onnxruntime": "ONNX Runtime", "executorch": "ExecuTorch", "litert": "LiteRT"}


def load(name: str) -> dict:
    """A results file, refused when it does not say which CPU it was measured on (its
    `measured_on`, or for files written before that key, the CPU in its `environment`)."""
    data = json.loads((RESULTS / name).read_text())
    cpu = data.get("measured_on") or {}
    if "measured_on" not in data and (data.get("environment") or {}).get("cpu_flags"):
        env = data["environment"]
        cpu = data["measured_on"] = {"cpu": env.get("cpu"), "cpu_flags": env["cpu_flags"]}
    if not cpu.get("cpu") or not cpu.get("cpu_flags"):
        raise ValueError(f"benchmarks/results/{name} does not name its CPU (model and flags)")
    if not data.get("command") and name in WRITTEN_BY:
        data["command"] = WRITTEN_BY[name] + " (the script that wrote it)"
    return data


def cpu_of(data: dict) -> str:
    cpu = data["measured_on"]
    return f"{cpu['cpu']} ({', '.join(cpu['cpu_flags'])})"


def source(name: str, data: dict) -> str:
    """The line under a table: where its numbers come from."""
    cpu = data["measured_on"]
    command = data.get("command", "").replace("python ", "python ", 1)
    return (
        f"\n*{cpu['cpu']}, {data['environment']['cores']} cores ({', '.join(cpu['cpu_flags'])})"
        f"; `{command}`, {data['finished'][:10]}; `benchmarks/results/{name}`.*\n"
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
