"""The protocol's JSON, the standard library's `json` against orjson, in one process: parse a
one-digit inference request (784 numbers, ~16 kB) to its float32 array and write its answer
(10 float32 log-probabilities), as edge/server/rest_codec.py does; the median of --rounds rounds of
--calls calls each, the two interleaved. Writes benchmarks/results/json_codec.json.

    python benchmarks/json_codec.py [--rounds 7] [--calls 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import orjson
from _report import print_table, write_report

from mnist_edge.edge import machine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--out", default="benchmarks/results/json_codec.json")
    a = p.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(784).astype(np.float32)
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": x.tolist()}
    body = json.dumps({"inputs": [tensor]}).encode()
    out = rng.standard_normal(10).astype(np.float32)

    def stdlib() -> bytes:
        data = json.loads(body)["inputs"][0]["data"]
        np.asarray(data).astype(np.float32)
        answer = {"name": "log_probs", "datatype": "FP32", "shape": [1, 10], "data": out.tolist()}
        head = {"model_name": "mnist", "outputs": [answer]}
        return json.dumps(head, separators=(",", ":")).encode()

    def with_orjson() -> bytes:
        data = orjson.loads(body)["inputs"][0]["data"]
        np.asarray(data).astype(np.float32)
        answer = {"name": "log_probs", "datatype": "FP32", "shape": [1, 10], "data": out}
        head = {"model_name": "mnist", "outputs": [answer]}
        return orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)

    same = np.array_equal(np.array(json.loads(with_orjson())["outputs"][0]["data"], np.float32),
                          out)  # fmt: skip
    times: dict[str, list[float]] = {"json": [], "orjson": []}
    for _ in range(a.rounds):
        for name, fn in (("json", stdlib), ("orjson", with_orjson)):
            t0 = time.perf_counter()
            for _ in range(a.calls):
                fn()
            times[name].append((time.perf_counter() - t0) / a.calls * 1e6)
    us = {k: statistics.median(v) for k, v in times.items()}
    print_table(["codec", "us per request and answer"], [[k, f"{v:.1f}"] for k, v in us.items()])
    print(f"orjson {us['json'] / us['orjson']:.1f}x faster; answers read back exactly: {same}")
    write_report(a.out, {"command": "python " + " ".join(sys.argv),
                         "measured_on": machine.measured_on(), "request_bytes": len(body),
                         "answer_bytes": {"json": len(stdlib()), "orjson": len(with_orjson())},
                         "us": us, "rounds": times, "answers_exact": same})  # fmt: skip


if __name__ == "__main__":
    main()
