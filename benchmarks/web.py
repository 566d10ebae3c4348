"""The page in a real browser: in-page latency against native ONNX Runtime, preprocessing
agreement with predict_image on real-world images, and a screenshot with a drawn digit.

Exports the packaged model's web folder (onnxruntime-web from `make web-deps`), serves it with
mnist-edge's server and drives Debian's chromium headless with Playwright. Latency: batch-1 calls
of `session.run` timed with performance.now() inside the page (`mnistEdge.bench`), p50/p90 over
--calls calls after 20 warm-up calls, for fp32 and INT8, with the page's default thread count and
with ?threads=1; native ONNX Runtime (Python, same model, same input) on 1 and 2 threads in the
same run, between the page's runs. Preprocessing: the image files of benchmarks/realworld.py
(--per-group per group) through predict_image and through the page's preprocess.js.

    python benchmarks/web.py [--calls 500] [--per-group 100] [--out benchmarks/results/web.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import print_table, write_report
from devtools import browser as driver
from realworld import make_images

from mnist_edge.edge import web
from mnist_edge.edge.backends.onnxruntime import load_session, raw_session
from mnist_edge.edge.images import prepare_image
from mnist_edge.edge.runtime import Predictor, pretrained_path

# a "3" drawn with two strokes, for the screenshot (coordinates on the 280x280 pad)
THREE = [[(85, 70), (120, 45), (170, 50), (195, 85), (180, 120), (140, 138)],
         [(140, 138), (190, 160), (200, 200), (170, 235), (120, 240), (80, 215)]]  # fmt: skip


def timed(session, feed: dict, calls: int, warmup: int = 20) -> list[float]:
    """Milliseconds of each of `calls` native session.run calls, after `warmup` calls."""
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def native(model: Path, threads: int, calls: int) -> list[float]:
    session = load_session(model, threads=threads)
    return timed(session, {session.get_inputs()[0].name: np.full((1, 1, 28, 28), -0.4242,
                                                                 np.float32)}, calls)  # fmt: skip


def in_page(page, model: str, calls: int) -> list[float]:
    return page.evaluate("([n, m]) => window.mnistEdge.bench(n, m)", [calls, model])


# Where the page's time goes: a model that does nothing (per-call cost of the page and of
# onnxruntime-web) and one 512x512 MatMul (compute speed of the wasm kernels), page vs native.
PROBE_JS = """async ([file, shape, n]) => {
  const s = await ort.InferenceSession.create(file, { executionProviders: ["wasm"] });
  const size = shape.reduce((a, b) => a * b, 1);
  const x = new ort.Tensor("float32", new Float32Array(size).fill(0.5), shape);
  for (let i = 0; i < 20; i++) await s.run({ x });
  const t = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await s.run({ x });
    t.push(performance.now() - t0);
  }
  await s.release();
  return t;
}"""
PROBES = {"identity (1x784)": ("probe_identity.onnx", [1, 784], 0),
          "MatMul 512x512x512": ("probe_matmul.onnx", [512, 512], 2 * 512**3)}  # fmt: skip


def write_probes(site: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def save(name: str, node, shape: list[int], inits=()) -> None:
        graph = helper.make_graph(
            [node], name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(inits))  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(site / name))

    save("probe_identity.onnx", helper.make_node("Identity", ["x"], ["y"]), [1, 784])
    w = numpy_helper.from_array(np.full((512, 512), 0.01, np.float32), "w")
    save("probe_matmul.onnx", helper.make_node("MatMul", ["x", "w"], ["y"]), [512, 512], [w])


def probes(page, site: Path, calls: int) -> dict[str, dict]:
    out = {}
    for name, (file, shape, flops) in PROBES.items():
        native_s = raw_session((site / file).read_bytes(), threads=1)
        times = timed(native_s, {"x": np.full(shape, 0.5, np.float32)}, calls)
        page_t = page.evaluate(PROBE_JS, [file, shape, calls])
        row = {"page_p50_ms": float(np.median(page_t)),
               "native_1thread_p50_ms": float(np.median(times))}  # fmt: skip
        row["ratio"] = row["page_p50_ms"] / row["native_1thread_p50_ms"]
        if flops:
            row["page_gflops"] = flops / row["page_p50_ms"] / 1e6
            row["native_gflops"] = flops / row["native_1thread_p50_ms"] / 1e6
        out[name] = row
    return out


# Every way the page can run the model, each on a fresh page load (threads, the proxy worker and
# the bundle are fixed when onnxruntime-web starts): (name, query). Chromium runs with WebNN
# switched on and WebGPU on SwiftShader, its software GPU.
PATHS = [
    ("wasm, 1 thread", "?threads=1"),
    ("wasm, 2 threads", "?threads=2"),
    ("wasm, 4 threads", "?threads=4"),
    ("wasm, 2 threads, proxy worker", "?threads=2&proxy=1"),
    ("wasm, 2 threads, WebNN/WebGPU bundle", "?threads=2&bundle=all"),
    ("WebGPU (SwiftShader)", "?path=webgpu"),
    ("WebNN (CPU)", "?path=webnn"),
]


def paths(url: str, models: dict[str, Path], calls: int) -> dict[str, dict]:
    """Each path's page latency (fp32 and INT8), its main-thread stall, or why it does not run;
    native ONNX Runtime on 1 thread measured between the paths, in the same run."""
    out: dict[str, dict] = {}
    native_runs = []
    with driver.chromium(args=(*driver.SWIFTSHADER_WEBGPU_ARGS, *driver.WEBNN_ARGS)) as browser:
        for name, query in PATHS:
            with driver.open_page(url + query + "&sw=0", browser, timeout_s=300) as run:
                if not run.ready:
                    out[name] = {"runs": False, "why": run.page.inner_text("#status")}
                    continue
                n = calls if "WebGPU" not in name else max(10, calls // 25)  # software: slow
                row: dict = {"runs": True, "threads": run.page.evaluate("window.mnistEdge.threads"),
                             "backend": run.page.evaluate("window.mnistEdge.backend")}  # fmt: skip
                for model in models:
                    row[model] = stats(in_page(run.page, model, n))
                row["longest_frame_gap_ms"] = run.page.evaluate(
                    "(n) => window.mnistEdge.jank(n, 'fp32')", min(n, 100)
                )
                row["frame_gap_calls"] = min(n, 100)
                row["notes"] = run.page.evaluate("window.mnistEdge.notes")  # fallbacks, if any
                out[name] = row
            native_runs.append(stats(native(models["fp32"], 1, calls)))
    native_p50 = float(np.median([r["p50_ms"] for r in native_runs]))
    for row in out.values():
        if row.get("runs"):
            row["fp32_vs_native_1thread"] = row["fp32"]["p50_ms"] / native_p50
    dist = web.find_ort_web()[0]
    relaxed = sorted(p.name for p in dist.iterdir() if "relaxed" in p.name)
    return {"paths": out, "native_fp32_1thread_p50_ms": native_p50,
            "relaxed_simd_builds_in_package": relaxed}  # fmt: skip


def stats(times: list[float]) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(times, 50)), "p90_ms": float(np.percentile(times, 90)),
            "mean_ms": float(np.mean(times)), "calls": len(times)}  # fmt: skip


def draw(page, strokes) -> None:
    box = page.locator("#pad").bounding_box()
    for points in strokes:
        xy = [(box["x"] + x * box["width"] / 280, box["y"] + y * box["height"] / 280)
              for x, y in points]  # fmt: skip
        page.mouse.move(*xy[0])
        page.mouse.down()
        for a, b in zip(xy, xy[1:], strict=False):
            for t in np.linspace(0, 1, 8)[1:]:
                page.mouse.move(a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)
        page.mouse.up()


PHONE = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True,
         "device_scale_factor": 3}  # fmt: skip


def touch_draw(page, strokes) -> None:
    """Strokes drawn with a finger (touch events, as a phone sends them)."""
    box = page.locator("#pad").bounding_box()
    cdp = page.context.new_cdp_session(page)
    for points in strokes:
        xy = [(box["x"] + x * box["width"] / 280, box["y"] + y * box["height"] / 280)
              for x, y in points]  # fmt: skip
        for i, (x, y) in enumerate(xy):
            kind = "touchStart" if i == 0 else "touchMove"
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def preprocessing(page, site: Path, per_group: int) -> dict:
    groups, _ = make_images(site / "rw", per_group, 80)
    predictor = Predictor(pretrained_path(), threads=1)
    rows, every = {}, {"same": 0, "n": 0, "diff": 0.0}
    for group, files in groups.items():
        urls = [str(Path(f).relative_to(site)) for f, _ in files]
        got = np.asarray(page.evaluate(
            "async (urls) => { const out = []; for (const u of urls) "
            "out.push(Array.from(await window.mnistEdge.prepareSource(u))); return out; }", urls,
        ), np.uint8).reshape(-1, 28, 28)  # fmt: skip
        want = np.stack([prepare_image(f) for f, _ in files])
        labels = np.array([y for _, y in files])
        pg, py = predictor.predict(got).labels, predictor.predict(want).labels
        diff = np.abs(got.astype(int) - want.astype(int)).mean(axis=(1, 2))
        rows[group] = {"n": len(files), "same_label_pct": float((pg == py).mean() * 100),
                       "mean_abs_diff": float(diff.mean()),
                       "exact_pct": float((diff == 0).mean() * 100),
                       "page_accuracy_pct": float((pg == labels).mean() * 100),
                       "python_accuracy_pct": float((py == labels).mean() * 100)}  # fmt: skip
        every["same"] += int((pg == py).sum())
        every["n"] += len(files)
        every["diff"] += float(diff.sum())
    overall = {"n": every["n"], "same_label_pct": every["same"] / every["n"] * 100,
               "mean_abs_diff": every["diff"] / every["n"]}  # fmt: skip
    return {"groups": rows, "overall": overall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--per-group", type=int, default=100)
    p.add_argument("--out", default="benchmarks/results/web.json")
    p.add_argument("--screenshot", default="benchmarks/results/web_page.png")
    p.add_argument("--phone-screenshot", default="benchmarks/results/web_phone.png")
    a = p.parse_args()
    if web.find_ort_web() is None:
        raise SystemExit("onnxruntime-web is not installed: run `make web-deps` first")
    site = Path(tempfile.mkdtemp(prefix="web-bench-")) / "web"
    cfg = web.WebConfig(str(pretrained_path()), str(site), str(pretrained_path(int8=True)))
    web.export_web(cfg)
    write_probes(site)
    server = web.make_server(site, port=0).start()
    latency: dict[str, dict] = {}
    models = {"fp32": pretrained_path(), "int8": pretrained_path(int8=True)}
    with driver.chromium() as browser:
        runs = {}
        for threads in ("default", "1"):
            query = "?sw=0" if threads == "default" else "?threads=1&sw=0"
            with driver.open_page(server.url + query, browser) as run:
                assert run.ready, run.page.inner_text("#status")
                n = run.page.evaluate("window.mnistEdge.threads")
                runs[threads] = n
                for name, path in models.items():
                    latency[f"page {name}, {n} thread(s)"] = stats(in_page(run.page, name, a.calls))
                    for t in (1, 2):
                        key = f"native {name}, {t} thread(s)"
                        latency.setdefault(key, {"runs": []})["runs"].append(
                            stats(native(path, t, a.calls))
                        )
                if threads == "1":
                    where = probes(run.page, site, a.calls)
                if threads == "default":
                    draw(run.page, THREE)
                    run.page.wait_for_function("window.mnistEdge.last?.label")
                    drawn = run.page.evaluate("window.mnistEdge.last.label")
                    run.page.screenshot(path=a.screenshot, full_page=True)
                    agreement = preprocessing(run.page, site, a.per_group)
    table = paths(server.url, models, a.calls)
    with driver.chromium() as browser:  # the page on a phone: 390x844, drawn with a finger
        with driver.open_page(server.url + "?sw=0", browser, **PHONE) as run:
            touch_draw(run.page, THREE)
            run.page.wait_for_function("window.mnistEdge.last?.label")
            drawn_phone = run.page.evaluate("window.mnistEdge.last.label")
            run.page.screenshot(path=a.phone_screenshot, full_page=True)
    server.stop()
    for key, value in latency.items():  # native: the median of its runs beside the page's
        if "runs" in value:
            latency[key] = {k: float(np.median([r[k] for r in value["runs"]]))
                            for k in value["runs"][0]}  # fmt: skip
    ratio = (
        latency[f"page fp32, {runs['default']} thread(s)"]["p50_ms"]
        / (latency["native fp32, 1 thread(s)"]["p50_ms"])
    )
    ratio_1t = (
        latency["page fp32, 1 thread(s)"]["p50_ms"] / latency["native fp32, 1 thread(s)"]["p50_ms"]
    )
    print_table(["runtime", "p50 ms", "p90 ms", "calls"],
                [[k, f"{v['p50_ms']:.3f}", f"{v['p90_ms']:.3f}", str(int(v["calls"]))]
                 for k, v in latency.items()])  # fmt: skip
    print(f"page fp32 p50 / native fp32 1-thread p50: {ratio:.2f} (default threads), "
          f"{ratio_1t:.2f} (1 thread); target <= 1.5")  # fmt: skip
    print_table(["probe (1 thread)", "page p50 ms", "native p50 ms", "page/native", "GFLOP/s"],
                [[k, f"{v['page_p50_ms']:.3f}", f"{v['native_1thread_p50_ms']:.3f}",
                  f"{v['ratio']:.2f}", f"{v.get('page_gflops', 0):.1f} vs "
                  f"{v.get('native_gflops', 0):.1f}"] for k, v in where.items()])  # fmt: skip
    print(f"drawn '3' read as {drawn!r}; screenshot {a.screenshot}")
    print_table(["group", "n", "same label %", "mean |diff|", "exact %", "page acc %"],
                [[g, str(r["n"]), f"{r['same_label_pct']:.1f}", f"{r['mean_abs_diff']:.3f}",
                  f"{r['exact_pct']:.1f}", f"{r['page_accuracy_pct']:.1f}"]
                 for g, r in agreement["groups"].items()])  # fmt: skip
    print(f"overall: {agreement['overall']}")
    print(
        f"native fp32 1 thread p50 {table['native_fp32_1thread_p50_ms']:.3f} ms; relaxed-SIMD "
        f"builds in the package: {table['relaxed_simd_builds_in_package'] or 'none'}"
    )
    print_table(["path", "fp32 p50 ms", "INT8 p50 ms", "fp32 / native 1T", "longest frame gap ms"],
                [[k, f"{r['fp32']['p50_ms']:.3f}", f"{r['int8']['p50_ms']:.3f}",
                  f"{r['fp32_vs_native_1thread']:.2f}", f"{r['longest_frame_gap_ms']:.1f}"]
                 if r["runs"] else [k, r["why"], "", "", ""]
                 for k, r in table["paths"].items()])  # fmt: skip
    print(f"phone (390x844, touch): drew '3', read as {drawn_phone!r}; {a.phone_screenshot}")
    write_report(a.out, {"calls": a.calls, "page_threads": runs, "latency": latency,
                         "ratio_page_fp32_to_native_1thread_p50": ratio,
                         "ratio_page_fp32_1thread_to_native_1thread_p50": ratio_1t,
                         "probes_1thread": where, "drawn_three_read_as": drawn,
                         "screenshot": a.screenshot,
                         "preprocessing": agreement, "ort_web": web.ORT_WEB_VERSION,
                         "paths": table, "phone": {"drawn_three_read_as": drawn_phone,
                                                   "screenshot": a.phone_screenshot}})  # fmt: skip


if __name__ == "__main__":
    main()
