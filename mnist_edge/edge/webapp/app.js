/* mnist-edge page: draw or drop a digit; the exported ONNX model answers with onnxruntime-web.
 * Everything about the model (normalisation, labels, accuracy, files) comes from model.json,
 * which `mnist-edge export --format web` writes from the model's own metadata.
 * window.mnistEdge is the page's API (the tests and the latency benchmark use it). */
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const P = globalThis.MnistPreprocess;
  const MAX_PIXELS = 64000000; // as mnist-edge's max_image_pixels: refuse larger images
  const api = { ready: null, error: null, config: null, threads: null, backend: null, paths: [], notes: [], last: null };
  window.mnistEdge = api;
  const sessions = {};
  const query = new URLSearchParams(location.search);
  let current = "fp32";
  // The ways this page can run a model, in the order it falls back through them. The page checks
  // each one the browser offers against outputs native ONNX Runtime gave (model.json's "check"),
  // times the ones that pass and uses the fastest; wasm is always there.
  const PATHS = {
    webnn: { ep: { name: "webnn", deviceType: "cpu" }, label: "WebNN (CPU)" },
    webgpu: { ep: "webgpu", label: "WebGPU" },
    wasm: { ep: "wasm", label: "WebAssembly SIMD" },
  };

  function fail(message) {
    api.error = message;
    const s = $("status");
    s.textContent = "Error: " + message;
    s.className = "error";
  }
  function say(message, cls) { const s = $("status"); s.textContent = message; s.className = cls || ""; }
  window.addEventListener("error", (e) => fail(e.message || String(e)));
  window.addEventListener("unhandledrejection", (e) => fail(String((e.reason && e.reason.message) || e.reason)));

  /** A session for model `name` on `path`, refused when its answers differ from native ONNX
   * Runtime's (model.json's check). */
  async function openChecked(name, path) {
    const file = api.config.models[name].file;
    const s = await ort.InferenceSession.create(file, { executionProviders: [PATHS[path].ep], graphOptimizationLevel: "all" });
    const off = await check(s, name);
    if (off) throw new Error(`${PATHS[path].label} gives other answers than native ONNX Runtime for ${file}: ${off}`);
    return s;
  }

  /** The session for model `name` on the path the page chose; a model that path cannot run
   * correctly falls back to wasm (said in api.notes). */
  function session(name, path) {
    path = path || api.backend;
    const key = `${path}:${name}`;
    if (!sessions[key]) {
      sessions[key] = openChecked(name, path);
      if (path !== "wasm") sessions[key] = sessions[key].catch((e) => { api.notes.push(e.message); return session(name, "wasm"); });
    }
    return sessions[key];
  }

  async function runOn(s, x, n) {
    // the proxy worker takes the input's buffer (transferred, so detached here): give it a copy
    const data = x instanceof Float32Array && !ort.env.wasm.proxy ? x : Float32Array.from(x);
    const input = new ort.Tensor("float32", data, [n, 1, 28, 28]);
    const out = await s.run({ [s.inputNames[0]]: input });
    return out[s.outputNames[0]].data;
  }

  /** Log-probabilities for n inputs: x is (n, 1, 28, 28) float32, already normalised. */
  async function run(x, n, name) {
    return runOn(await session(name || current), x, n);
  }

  /** null when the session reproduces model.json's outputs within the parity rule (an element
   * passes within atol or rtol), else how far off it is. */
  async function check(s, name) {
    const c = api.config.check;
    if (!c || !c.outputs[name]) return null;
    const x = Float32Array.from(c.inputs.flat());
    const got = await runOn(s, x, c.inputs.length), want = c.outputs[name].flat();
    let worst = 0;
    for (let i = 0; i < want.length; i++) {
      const d = Math.abs(got[i] - want[i]);
      if (!(d <= c.atol || d <= c.rtol * Math.abs(want[i]))) worst = Math.max(worst, Number.isNaN(d) ? Infinity : d);
    }
    return worst ? `log-probabilities off by up to ${worst.toPrecision(3)} (atol ${c.atol}, rtol ${c.rtol})` : null;
  }

  function normalise(digit, name) {
    const m = api.config.models[name || current];
    return P.normalise(digit, m.mean, m.std, m.pixel_scale);
  }

  /** Width and height from an image file's header (PNG, JPEG, GIF, BMP, WebP), before any
   * decoding, as mnist-edge checks max_image_pixels; null when the format is not known here. */
  function headerSize(b) {
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength), n = b.length;
    const ascii = (o, len) => String.fromCharCode(...b.subarray(o, o + len));
    if (n >= 24 && b[0] === 0x89 && ascii(1, 3) === "PNG") return [dv.getUint32(16), dv.getUint32(20)];
    if (n >= 10 && ascii(0, 3) === "GIF") return [dv.getUint16(6, true), dv.getUint16(8, true)];
    if (n >= 26 && ascii(0, 2) === "BM") return [Math.abs(dv.getInt32(18, true)), Math.abs(dv.getInt32(22, true))];
    if (n >= 30 && ascii(0, 4) === "RIFF" && ascii(8, 4) === "WEBP") {
      const kind = ascii(12, 4);
      if (kind === "VP8X") return [1 + (b[24] | (b[25] << 8) | (b[26] << 16)), 1 + (b[27] | (b[28] << 8) | (b[29] << 16))];
      if (kind === "VP8 ") return [dv.getUint16(26, true) & 0x3fff, dv.getUint16(28, true) & 0x3fff];
      if (kind === "VP8L") { const v = dv.getUint32(21, true); return [(v & 0x3fff) + 1, ((v >>> 14) & 0x3fff) + 1]; }
    }
    if (n >= 4 && b[0] === 0xff && b[1] === 0xd8) { // JPEG: the first start-of-frame marker
      let o = 2;
      while (o + 9 < n) {
        if (b[o] !== 0xff) { o++; continue; }
        const m = b[o + 1];
        if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) return [dv.getUint16(o + 7), dv.getUint16(o + 5)];
        if (m === 0xd8 || m === 0x01 || (m >= 0xd0 && m <= 0xd7) || m === 0xff) { o += m === 0xff ? 1 : 2; continue; }
        o += 2 + dv.getUint16(o + 2);
      }
    }
    return null;
  }

  /** Decoded pixels of an image (Blob/File/URL) composited on white paper, like Pillow does.
   * Too many pixels (from the header) or an undecodable file is an InputError, not a crash. */
  async function decode(source) {
    let blob = source;
    if (typeof source === "string") {
      const r = await fetch(source);
      if (!r.ok) throw new P.InputError(`cannot read ${source}: HTTP ${r.status}`);
      blob = await r.blob();
    }
    const name = source.name || (typeof source === "string" ? source : "the image");
    const size = headerSize(new Uint8Array(await blob.slice(0, 1 << 20).arrayBuffer()));
    if (size && size[0] * size[1] > MAX_PIXELS) {
      throw new P.InputError(`${name} is ${size[0]}x${size[1]} pixels, over the limit of ${MAX_PIXELS.toLocaleString("en")}; scale it down first`);
    }
    let bitmap;
    try {
      bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    } catch (e) {
      throw new P.InputError(`${name} is not a readable image (${e.name || e})`);
    }
    const w = bitmap.width, h = bitmap.height;
    if (w * h > MAX_PIXELS) { bitmap.close(); throw new P.InputError(`${name} is ${w}x${h} pixels, over the limit of ${MAX_PIXELS.toLocaleString("en")}`); }
    const c = new OffscreenCanvas(w, h), ctx = c.getContext("2d", { willReadFrequently: true });
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, w, h);
    ctx.drawImage(bitmap, 0, 0);
    bitmap.close();
    return { rgba: ctx.getImageData(0, 0, w, h).data, w, h };
  }

  async function prepareSource(source) {
    const { rgba, w, h } = await decode(source);
    return P.prepareRGBA(rgba, w, h);
  }

  function softmax(logp) {
    const m = Math.max(...logp), e = logp.map((v) => Math.exp(v - m)), s = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / s);
  }

  /** Classify one prepared 28x28 digit and show everything about it. */
  async function classify(digit) {
    const t0 = performance.now();
    const logp = Array.from(await run(normalise(digit), 1));
    const ms = performance.now() - t0;
    const probs = softmax(logp), labels = api.config.models[current].labels;
    const order = probs.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]);
    $("digit").textContent = labels[order[0][1]];
    $("confidence").textContent = (100 * order[0][0]).toFixed(1) + "%";
    $("top3").innerHTML = order.slice(0, 3).map(([p, i]) =>
      `<li><span>${labels[i]}</span><span class="bar" style="width:${Math.max(1, 100 * p).toFixed(1)}%"></span><span class="p">${(100 * p).toFixed(1)}%</span></li>`).join("");
    const seen = $("seen").getContext("2d"), img = seen.createImageData(28, 28);
    for (let i = 0; i < 784; i++) { img.data.set([digit[i], digit[i], digit[i], 255], 4 * i); }
    seen.putImageData(img, 0, 0);
    $("latency").textContent = `${ms.toFixed(2)} ms (model call)`;
    if (!api.error && $("status").className === "error") say("ready: draw a digit", "ready");
    api.last = { label: labels[order[0][1]], index: order[0][1], probs, logp, digit: Array.from(digit), ms };
    return api.last;
  }

  async function classifySource(source) {
    try {
      return await classify(await prepareSource(source));
    } catch (e) {
      if (e instanceof P.InputError) { say(e.message, "error"); api.last = { error: e.message }; return api.last; }
      throw e;
    }
  }

  // --- drawing pad ------------------------------------------------------------------------------
  const pad = $("pad"), pen = pad.getContext("2d", { willReadFrequently: true });
  function clearPad() { pen.fillStyle = "#fff"; pen.fillRect(0, 0, pad.width, pad.height); }
  clearPad();
  pen.lineCap = "round"; pen.lineJoin = "round"; pen.strokeStyle = "#000"; pen.lineWidth = 18;
  let drawing = false, strokes = 0;
  const at = (e) => { const r = pad.getBoundingClientRect(); return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height]; };
  pad.addEventListener("pointerdown", (e) => { drawing = true; pad.setPointerCapture(e.pointerId); const [x, y] = at(e); pen.beginPath(); pen.moveTo(x, y); pen.lineTo(x, y); pen.stroke(); });
  pad.addEventListener("pointermove", (e) => { if (!drawing) return; const [x, y] = at(e); pen.lineTo(x, y); pen.stroke(); });
  const end = () => { if (!drawing) return; drawing = false; strokes++; classifyPad(); };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);
  async function classifyPad() {
    if (!api.config) return null;
    try {
      const d = pen.getImageData(0, 0, pad.width, pad.height);
      return await classify(P.prepareRGBA(d.data, pad.width, pad.height));
    } catch (e) {
      if (e instanceof P.InputError) { $("digit").textContent = "?"; api.last = { error: e.message }; return api.last; }
      throw e;
    }
  }
  $("clear").addEventListener("click", () => { clearPad(); strokes = 0; $("digit").textContent = "?"; $("confidence").textContent = ""; $("top3").innerHTML = ""; });
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) classifySource(e.target.files[0]); });
  pad.addEventListener("dragover", (e) => { e.preventDefault(); pad.classList.add("drop"); });
  pad.addEventListener("dragleave", () => pad.classList.remove("drop"));
  pad.addEventListener("drop", (e) => { e.preventDefault(); pad.classList.remove("drop"); if (e.dataTransfer.files[0]) classifySource(e.dataTransfer.files[0]); });

  /** The longest gap (ms) between animation frames while n batch-1 calls run: how long the
   * page stops responding (with ?proxy=1 the calls run in a worker). */
  async function jank(n, name) {
    const gaps = [];
    let last = performance.now(), going = true;
    const tick = (t) => { gaps.push(t - last); last = t; if (going) requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
    await bench(n, name, 0);
    going = false;
    gaps.push(performance.now() - last); // up to the end: no frame at all is one long gap
    return Math.max(...gaps);
  }

  /** batch-1 latencies (ms) of n model calls on one input, after `warmup` calls. */
  async function bench(n, name, warmup = 20) {
    const x = new Float32Array(784).fill(-0.4242);
    for (let i = 0; i < warmup; i++) await run(x, 1, name);
    const times = [];
    for (let i = 0; i < n; i++) { const t0 = performance.now(); await run(x, 1, name); times.push(performance.now() - t0); }
    return times;
  }

  function showModel() {
    const m = api.config.models[current];
    const acc = m.test_accuracy != null ? `${m.test_accuracy.toFixed(2)}% on MNIST test` : "accuracy unknown";
    $("modelinfo").textContent = `${m.file} (${current}), ${acc}, sha256 ${m.sha256.slice(0, 12)}…` +
      (m.source_checkpoint_sha256 ? `, from checkpoint ${m.source_checkpoint_sha256.slice(0, 12)}…` : "");
  }

  /** Why each path besides wasm cannot be used here, or null when it can. */
  async function probe() {
    const why = {};
    if (!("ml" in navigator)) why.webnn = "not offered by this browser";
    else {
      try { await navigator.ml.createContext({ deviceType: "cpu" }); why.webnn = null; } catch (e) { why.webnn = String(e.message || e).replace(/^.*?: /, ""); }
    }
    if (!navigator.gpu) why.webgpu = "not offered by this browser";
    else {
      try {
        const a = await navigator.gpu.requestAdapter(), i = (a && a.info) || {};
        const name = [i.vendor, i.architecture, i.description].filter(Boolean).join(" ");
        why.webgpu = !a ? "no WebGPU adapter" : (i.isFallbackAdapter || /swiftshader|llvmpipe/i.test(name))
          ? `software adapter (${name || "fallback"}), slower than WebAssembly` : null;
      } catch (e) { why.webgpu = String(e.message || e); }
    }
    return why;
  }

  /** Load onnxruntime-web; a failure says where it tried and what to run. */
  function loadRuntime(src, ort) {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src; s.crossOrigin = "anonymous";
      s.onload = resolve;
      s.onerror = () => reject(new Error(`onnxruntime-web did not load from ${new URL(src, location.href).href}` +
        (ort.source === "cdn" ? " (is the network there?): put it in the folder with `make web-deps` then `mnist-edge export --format web`, or pass --ort-web DIR"
          : ": export the page again (`make web-deps`, then `mnist-edge export --format web`)")));
      document.head.appendChild(s);
    });
  }

  /** p50 of a few batch-1 calls on a checked session (ms). */
  async function quickTime(s, n = 10) {
    const x = new Float32Array(784).fill(-0.4242), t = [];
    for (let i = 0; i < 3; i++) await runOn(s, x, 1);
    for (let i = 0; i < n; i++) { const t0 = performance.now(); await runOn(s, x, 1); t.push(performance.now() - t0); }
    return t.sort((a, b) => a - b)[Math.floor(n / 2)];
  }

  async function start() {
    if ("serviceWorker" in navigator && query.get("sw") !== "0") navigator.serviceWorker.register("sw.js").catch(() => {});
    let config;
    try {
      const r = await fetch("model.json");
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      config = await r.json();
    } catch (e) { throw new Error("cannot read model.json: " + e.message); }
    api.config = config;
    const forced = query.get("path"); // ?path=wasm|webnn|webgpu: that path alone
    if (forced && !PATHS[forced]) throw new Error(`unknown path ${forced}; use ${Object.keys(PATHS).join(", ")}`);
    const why = await probe();
    let tried = forced ? [forced] : ["webnn", "webgpu"].filter((p) => why[p] === null).concat("wasm");
    const all = tried.some((p) => p !== "wasm") || query.get("bundle") === "all"; // ?bundle=all: measure its wasm
    if (all && !config.ort.all_script) {
      tried.filter((p) => p !== "wasm").forEach((p) => { why[p] = "this export has no ort.all.min.js (WebNN/WebGPU bundle)"; });
      tried = ["wasm"];
    }
    await loadRuntime(all && config.ort.all_script ? config.ort.all_script : config.ort.script, config.ort);
    if (config.ort.wasm_paths) ort.env.wasm.wasmPaths = config.ort.wasm_paths;
    const cores = navigator.hardwareConcurrency || 1;
    const asked = parseInt(query.get("threads") || "", 10);
    const wanted = asked > 0 ? asked : Math.min(4, cores); // ?threads=N sets the thread count
    ort.env.wasm.numThreads = self.crossOriginIsolated ? wanted : 1;
    ort.env.wasm.proxy = query.get("proxy") === "1"; // inference in a worker (0.5 ms more a call)
    for (const p of tried) {
      try {
        const s = await openChecked("fp32", p);
        sessions[`${p}:fp32`] = Promise.resolve(s);
        api.paths.push({ path: p, ok: true, p50_ms: tried.length > 1 ? await quickTime(s) : null });
      } catch (e) {
        api.paths.push({ path: p, ok: false, why: String(e.message || e) });
      }
    }
    for (const p of Object.keys(PATHS)) if (!tried.includes(p) && why[p]) api.paths.push({ path: p, ok: false, why: why[p] });
    const usable = api.paths.filter((r) => r.ok).sort((a, b) => (a.p50_ms || 0) - (b.p50_ms || 0));
    if (!usable.length) {
      throw new Error(`ONNX Runtime Web could not run the model (${config.ort.script}): ` +
        api.paths.map((r) => `${r.path}: ${r.why}`).join("; "));
    }
    api.backend = usable[0].path;
    api.threads = ort.env.wasm.numThreads;
    const others = api.paths.filter((r) => r.path !== api.backend);
    $("runtime").textContent = `onnxruntime-web ${config.ort.version}, ${api.backend}` +
      (api.backend === "wasm" ? `, ${api.threads} thread${api.threads === 1 ? "" : "s"}` : "") +
      (self.crossOriginIsolated ? "" : " (page not cross-origin isolated: one thread)") +
      (others.length ? "; " + others.map((r) => r.ok ? `${r.path} ${r.p50_ms.toFixed(1)} ms` : `${r.path}: ${r.why}`).join("; ") : "");
    const select = $("model");
    select.innerHTML = Object.keys(config.models).map((k) => `<option value="${k}">${k}</option>`).join("");
    select.addEventListener("change", async () => { current = select.value; showModel(); await session(current); if (strokes) classifyPad(); });
    showModel();
    say("ready: draw a digit", "ready");
  }

  Object.assign(api, { run, bench, jank, classify, classifySource, classifyPad, prepareSource, normalise,
    clearPad, select: (name) => { current = name; showModel(); } });
  api.ready = start().then(() => true, (e) => { fail(e.message || String(e)); return false; });
})();
