/* mnist-edge: a photo, scan or drawing of one digit -> the 28x28 MNIST digit the model sees.
 *
 * A step-for-step port of mnist_edge/edge/images.py (prepare_image), down to Pillow's resampling
 * (fixed-point, 8-bit between passes), its rank filters (edges replicated) and numpy's rounding
 * (half to even) and percentiles (linear), so that the page and `mnist-edge predict` agree.
 * No dependencies; works in a page (globalThis.MnistPreprocess) and in node (module.exports).
 */
(function (root) {
  "use strict";

  const C = {
    WORK_SIDE: 512, NOISE_LEVEL: 5.0, BLANK_LEVEL: 16.0, INK_FRACTION: 0.3,
    STROKE_RANGE: [1.5, 2.3], STROKE_WORK: 4, STROKE_ROUNDS: 3, BOX: 20, SIDE: 28,
    BLOCK_TOLERANCE: 8.0, MAX_BLOCK: 16, SMALL_INK: 0.75,
  };

  class InputError extends Error {}

  // --- numpy helpers ---------------------------------------------------------------------
  function pyRound(x) { // Python's round() / numpy's: half to even
    const r = Math.round(x);
    return (Math.abs(x % 1) === 0.5 && r % 2 !== 0) ? r - 1 : r;
  }
  function sorted(a) { return Float64Array.from(a).sort(); }
  function median(a) {
    const s = sorted(a), n = s.length;
    return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  }
  function percentileSorted(s, q) { // numpy's default (linear) method
    const pos = (q / 100) * (s.length - 1), lo = Math.floor(pos), hi = Math.min(lo + 1, s.length - 1);
    return s[lo] + (s[hi] - s[lo]) * (pos - lo);
  }
  function amax(a) { let m = -Infinity; for (const v of a) if (v > m) m = v; return m; }
  function toUint8(a) { // np.clip(a, 0, 255).astype(np.uint8): clamp, then truncate
    const out = new Uint8Array(a.length);
    for (let i = 0; i < a.length; i++) out[i] = Math.trunc(Math.min(255, Math.max(0, a[i])));
    return out;
  }
  function lstsq(rows, v, n) { // least squares by the normal equations (n <= 6 unknowns)
    const m = Array.from({ length: n }, () => new Float64Array(n + 1));
    for (let k = 0; k < v.length; k++) {
      const r = rows[k];
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < n; j++) m[i][j] += r[i] * r[j];
        m[i][n] += r[i] * v[k];
      }
    }
    for (let c = 0; c < n; c++) { // Gauss-Jordan with partial pivoting
      let p = c;
      for (let r = c + 1; r < n; r++) if (Math.abs(m[r][c]) > Math.abs(m[p][c])) p = r;
      [m[c], m[p]] = [m[p], m[c]];
      if (Math.abs(m[c][c]) < 1e-12) continue; // singular direction: leave that term at 0
      for (let r = 0; r < n; r++) {
        if (r === c) continue;
        const f = m[r][c] / m[c][c];
        for (let j = c; j <= n; j++) m[r][j] -= f * m[c][j];
      }
    }
    return Array.from({ length: n }, (_, i) => (Math.abs(m[i][i]) < 1e-12 ? 0 : m[i][n] / m[i][i]));
  }

  // --- Pillow's resampling (Resample.c) and rank filters (RankFilter.c) ------------------
  function sinc(x) { if (x === 0) return 1; x *= Math.PI; return Math.sin(x) / x; }
  const FILTERS = {
    box: { support: 0.5, f: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
    bicubic: {
      support: 2,
      f: (x) => {
        const a = -0.5; x = Math.abs(x);
        if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
        if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
        return 0;
      },
    },
    lanczos: { support: 3, f: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0) },
  };
  const PRECISION_BITS = 22, ONE = 2 ** PRECISION_BITS;

  function coeffs(inSize, outSize, filter) {
    const scale = inSize / outSize, fscale = Math.max(scale, 1), support = filter.support * fscale;
    const out = [];
    for (let xx = 0; xx < outSize; xx++) {
      const center = (xx + 0.5) * scale;
      const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
      const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
      const k = new Float64Array(xmax);
      let ww = 0;
      for (let x = 0; x < xmax; x++) { k[x] = filter.f((x + xmin - center + 0.5) / fscale); ww += k[x]; }
      const kk = new Float64Array(xmax);
      for (let x = 0; x < xmax; x++) {
        const w = ww !== 0 ? k[x] / ww : k[x];
        kk[x] = w < 0 ? Math.trunc(-0.5 + w * ONE) : Math.trunc(0.5 + w * ONE);
      }
      out.push([xmin, kk]);
    }
    return out;
  }
  function clip8(ss) { return ss >= ONE * 256 ? 255 : ss <= 0 ? 0 : Math.floor(ss / ONE); }

  /** Image.resize((w2, h2), filter) of a uint8 (h, w) image: horizontal pass, then vertical. */
  function resize(img, w, h, w2, h2, name) {
    const filter = FILTERS[name];
    let cur = img, cw = w;
    if (w2 !== w) {
      const cs = coeffs(w, w2, filter), tmp = new Uint8Array(w2 * h);
      for (let y = 0; y < h; y++) {
        for (let xx = 0; xx < w2; xx++) {
          const [xmin, k] = cs[xx]; let ss = ONE / 2;
          for (let x = 0; x < k.length; x++) ss += cur[y * w + x + xmin] * k[x];
          tmp[y * w2 + xx] = clip8(ss);
        }
      }
      cur = tmp; cw = w2;
    }
    if (h2 !== h) {
      const cs = coeffs(h, h2, filter), tmp = new Uint8Array(cw * h2);
      for (let yy = 0; yy < h2; yy++) {
        const [ymin, k] = cs[yy];
        for (let x = 0; x < cw; x++) {
          let ss = ONE / 2;
          for (let y = 0; y < k.length; y++) ss += cur[(y + ymin) * cw + x] * k[y];
          tmp[yy * cw + x] = clip8(ss);
        }
      }
      cur = tmp;
    }
    return cur === img ? Uint8Array.from(img) : cur;
  }

  /** ImageFilter.MinFilter / MaxFilter / MedianFilter(size) of a uint8 image, edges replicated. */
  function rankFilter(img, w, h, name, size) {
    const r = size >> 1, out = new Uint8Array(w * h);
    const at = (x, y) => img[Math.min(h - 1, Math.max(0, y)) * w + Math.min(w - 1, Math.max(0, x))];
    if (name === "median") {
      const win = new Uint8Array(size * size), rank = (size * size) >> 1;
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
        let i = 0;
        for (let dy = -r; dy <= r; dy++) for (let dx = -r; dx <= r; dx++) win[i++] = at(x + dx, y + dy);
        win.sort(); out[y * w + x] = win[rank];
      }
      return out;
    }
    const pick = name === "min" ? Math.min : Math.max, rows = new Uint8Array(w * h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) { // separable: rows, then columns
      let m = at(x, y); for (let d = 1; d <= r; d++) m = pick(m, at(x - d, y), at(x + d, y));
      rows[y * w + x] = m;
    }
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      let m = rows[y * w + x];
      for (let d = 1; d <= r; d++) {
        m = pick(m, rows[Math.max(0, y - d) * w + x], rows[Math.min(h - 1, y + d) * w + x]);
      }
      out[y * w + x] = m;
    }
    return out;
  }
  const filtered = (a, w, h, name, size = 3) => Float64Array.from(rankFilter(toUint8(a), w, h, name, size));

  // --- the steps of prepare_image ------------------------------------------------------------
  /** Steps 1-2 (after decoding): RGBA bytes on white paper -> luminance, longer side <= 512. */
  function grayFromRGBA(rgba, w, h) {
    const g = new Uint8Array(w * h);
    for (let i = 0; i < w * h; i++) { // Pillow's convert("L"): ITU-R 601-2 luma, fixed point
      const o = 4 * i;
      g[i] = (rgba[o] * 19595 + rgba[o + 1] * 38470 + rgba[o + 2] * 7471 + 0x8000) >> 16;
    }
    return shrink(g, w, h);
  }
  function shrink(g, w, h) {
    if (Math.max(w, h) <= C.WORK_SIDE) return { g: Float64Array.from(g), w, h };
    const s = C.WORK_SIDE / Math.max(w, h);
    const w2 = Math.max(1, pyRound(w * s)), h2 = Math.max(1, pyRound(h * s));
    return { g: Float64Array.from(resize(g, w, h, w2, h2, "box")), w: w2, h: h2 };
  }

  function noiseLevel(g, w, h) {
    if (w < 2) return 0;
    const d = new Float64Array((w - 1) * h);
    let i = 0;
    for (let y = 0; y < h; y++) for (let x = 0; x < w - 1; x++) d[i++] = g[y * w + x + 1] - g[y * w + x];
    const m = median(d);
    return (1.4826 * median(d.map((v) => Math.abs(v - m)))) / Math.SQRT2;
  }

  function darkInk(g, w, h) {
    if (h < 3 || w < 3) return median(g) > 127;
    const rows = [], v = [];
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      if (y === 0 || y === h - 1 || x === 0 || x === w - 1) { rows.push([1, x / w, y / h]); v.push(g[y * w + x]); }
    }
    let keep = v.map(() => true), coef = [median(v), 0, 0];
    for (let round = 0; round < 3; round++) {
      const idx = keep.flatMap((k, i) => (k ? [i] : []));
      coef = lstsq(idx.map((i) => rows[i]), idx.map((i) => v[i]), 3);
      const r = v.map((vi, i) => vi - (coef[0] + coef[1] * rows[i][1] + coef[2] * rows[i][2]));
      const mad = median(r.map(Math.abs));
      keep = r.map((ri) => Math.abs(ri) <= 2.5 * 1.4826 * mad + 1.0);
      if (keep.filter(Boolean).length < 3) break;
    }
    const res = new Float64Array(w * h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      res[y * w + x] = g[y * w + x] - (coef[0] + coef[1] * (x / w) + coef[2] * (y / h));
    }
    const s = sorted(res);
    return -percentileSorted(s, 0.05) > percentileSorted(s, 99.95);
  }

  function background(g, w, h, rounds = 4) {
    const step = Math.max(1, Math.trunc(Math.sqrt((h * w) / 4096)));
    const rows = [], v = [];
    for (let y = 0; y < h; y += step) for (let x = 0; x < w; x += step) {
      const ys = y / h - 0.5, xs = x / w - 0.5;
      rows.push([1, xs, ys, xs * xs, xs * ys, ys * ys]); v.push(g[y * w + x]);
    }
    const med = median(v);
    let keep = v.map((vi) => vi <= med), coef = [med, 0, 0, 0, 0, 0], sigma = 0;
    const fit = (r, c) => r.reduce((s, t, i) => s + t * c[i], 0);
    for (let round = 0; round < rounds; round++) {
      const idx = keep.flatMap((k, i) => (k ? [i] : []));
      if (idx.length < 12) break;
      coef = lstsq(idx.map((i) => rows[i]), idx.map((i) => v[i]), 6);
      const r = v.map((vi, i) => vi - fit(rows[i], coef));
      const rk = idx.map((i) => r[i]), m = median(rk);
      sigma = 1.4826 * median(rk.map((x) => Math.abs(x - m)));
      keep = r.map((ri) => ri < 2.5 * sigma + 1.0);
    }
    const surface = new Float64Array(w * h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      const yy = y / h - 0.5, xx = x / w - 0.5;
      surface[y * w + x] = fit([1, xx, yy, xx * xx, xx * yy, yy * yy], coef);
    }
    return { surface, sigma };
  }

  /** Steps 3-6: light ink on black, background and noise removed, brightest ink at 255. */
  function inkImage(g, w, h) {
    const noisy = noiseLevel(g, w, h) > C.NOISE_LEVEL && Math.min(w, h) >= 16;
    if (noisy) g = filtered(g, w, h, "median");
    const dark = darkInk(g, w, h);
    if (dark) g = g.map((v) => 255 - v);
    const { surface, sigma } = background(g, w, h);
    const ink = new Float64Array(w * h);
    for (let i = 0; i < ink.length; i++) {
      ink[i] = Math.max(0, g[i] - surface[i] - 2 * sigma);
      if (dark) ink[i] *= 255 / Math.max(255 - surface[i], 16);
    }
    const top = amax(ink);
    let peak = ink.length > 2000 ? percentileSorted(sorted(ink), 99.9) : top;
    peak = Math.max(peak, 0.5 * top);
    if (peak < C.BLANK_LEVEL) throw new InputError("the image looks blank: no ink stands out from the background");
    return { ink: ink.map((v) => Math.min(255, Math.max(0, v * (255 / peak)))), noisy };
  }

  function cropTo(a, w, h, mask) {
    let y0 = h, y1 = -1, x0 = w, x1 = -1;
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      if (mask[y * w + x]) { y0 = Math.min(y0, y); y1 = Math.max(y1, y); x0 = Math.min(x0, x); x1 = Math.max(x1, x); }
    }
    const cw = x1 - x0 + 1, ch = y1 - y0 + 1, out = new Float64Array(cw * ch);
    for (let y = 0; y < ch; y++) for (let x = 0; x < cw; x++) out[y * cw + x] = a[(y + y0) * w + x + x0];
    return { a: out, w: cw, h: ch };
  }
  function resized(c, scale, filter) {
    const w2 = Math.max(1, pyRound(c.w * scale)), h2 = Math.max(1, pyRound(c.h * scale));
    return { a: Float64Array.from(resize(toUint8(c.a), c.w, c.h, w2, h2, filter)), w: w2, h: h2 };
  }
  function fitBox(c, box) { // step 8's resize: longer side to `box` (Lanczos), brightest at 255
    const smooth = Math.max(c.w, c.h) < C.SMALL_INK * box ? "bicubic" : "lanczos"; // a tiny crop
    const d = resized(c, box / Math.max(c.w, c.h), smooth), top = amax(d.a);
    if (top <= 0) throw new InputError("the image looks blank: the ink vanished when scaled to 20 pixels");
    d.a = d.a.map((v) => v * (255 / top));
    return d;
  }
  function centerByMass(d, side = C.SIDE) {
    let total = 0, cy = 0, cx = 0;
    for (let y = 0; y < d.h; y++) for (let x = 0; x < d.w; x++) {
      const v = d.a[y * d.w + x]; total += v; cy += v * y; cx += v * x;
    }
    cy /= total; cx /= total;
    const top = Math.min(Math.max(pyRound(side / 2 - 0.5 - cy), 0), side - d.h);
    const left = Math.min(Math.max(pyRound(side / 2 - 0.5 - cx), 0), side - d.w);
    const canvas = new Float64Array(side * side);
    for (let y = 0; y < d.h; y++) for (let x = 0; x < d.w; x++) canvas[(y + top) * side + x + left] = d.a[y * d.w + x];
    return toUint8(canvas);
  }
  function strokeWidth(digit, side = C.SIDE) { // 2 x area / perimeter of the pixels >= 128
    const on = (x, y) => x >= 0 && y >= 0 && x < side && y < side && digit[y * side + x] >= 128;
    let area = 0, perimeter = 0;
    for (let y = -1; y <= side; y++) for (let x = -1; x <= side; x++) {
      if (on(x, y)) area++;
      if (x < side && on(x, y) !== on(x + 1, y)) perimeter++;
      if (y < side && on(x, y) !== on(x, y + 1)) perimeter++;
    }
    return perimeter ? (2 * area) / perimeter : 0;
  }
  function restroke(crop, box, width) { // step 9
    const [low, high] = C.STROKE_RANGE;
    const big = resized(crop, (C.STROKE_WORK * box) / Math.max(crop.w, crop.h), "bicubic");
    let radius = 0, best = null;
    for (let round = 0; round < C.STROKE_ROUNDS; round++) {
      const target = Math.min(Math.max(width, low), high);
      radius += pyRound(((target - width) / 2) * C.STROKE_WORK);
      if (radius === 0 || target === width) break;
      const stroked = filtered(big.a, big.w, big.h, radius > 0 ? "max" : "min", 2 * Math.abs(radius) + 1);
      const top = amax(stroked);
      if (top < C.BLANK_LEVEL) break;
      const c = cropTo(stroked, big.w, big.h, stroked.map((v) => v > C.INK_FRACTION * top));
      best = centerByMass(fitBox(c, box));
      width = strokeWidth(best);
    }
    return best;
  }

  // step 2b: an image of flat f x f pixel blocks (nearest-neighbour enlarged) -> one per block
  function changes(g, w, h, alongRows) { // i where line i and i+1 differ somewhere
    const n = alongRows ? h : w, m = alongRows ? w : h, out = [];
    for (let i = 0; i + 1 < n; i++) {
      let step = 0;
      for (let j = 0; j < m; j++) {
        const a = alongRows ? g[i * w + j] : g[j * w + i], b = alongRows ? g[(i + 1) * w + j] : g[j * w + i + 1];
        step = Math.max(step, Math.abs(b - a));
      }
      if (step > C.BLOCK_TOLERANCE) out.push(i);
    }
    return out;
  }
  function pixelBlock(g, w, h) { // [f, row offset, column offset]; f = 1: not made of blocks
    const rows = changes(g, w, h, true), cols = changes(g, w, h, false);
    if (rows.length < 2 || cols.length < 2) return [1, 0, 0];
    const gcd = (a, b) => (b ? gcd(b, a % b) : a);
    let f = 0;
    for (const c of [rows, cols]) for (let i = 1; i < c.length; i++) f = gcd(f, c[i] - c[i - 1]);
    if (f < 2 || f > C.MAX_BLOCK) return [1, 0, 0];
    return [f, (rows[0] + 1) % f, (cols[0] + 1) % f];
  }
  function nativeResolution(g, w, h) {
    const [f, top, left] = pixelBlock(g, w, h);
    if (f === 1) return { g, w, h };
    const pick = (n, o) => { const at = o ? [0] : []; for (let i = o; i < n; i += f) at.push(i); return at; };
    const rows = pick(h, top), cols = pick(w, left), out = new Float64Array(rows.length * cols.length);
    rows.forEach((y, r) => cols.forEach((x, c) => { out[r * cols.length + c] = g[y * w + x]; }));
    return { g: out, w: cols.length, h: rows.length };
  }

  /** Steps 2b-9 on a grey image (0..255, any size up to WORK_SIDE) -> Uint8Array(784). */
  function prepareGray(g0, w0, h0, box = C.BOX) {
    if (w0 < 1 || h0 < 1) throw new InputError(`the image is empty (${w0}x${h0})`);
    const { g, w, h } = nativeResolution(Float64Array.from(g0), w0, h0);
    const { ink, noisy } = inkImage(g, w, h);
    let mask = ink.map((v) => (v > C.INK_FRACTION * 255 ? 1 : 0));
    if (noisy) { // specks left by the noise must not widen the crop
      const opened = filtered(filtered(mask.map((v) => v * 255), w, h, "min"), w, h, "max");
      if (opened.some((v) => v > 0)) mask = opened.map((v) => (v > 0 ? 1 : 0));
    }
    const crop = cropTo(ink, w, h, mask);
    const digit = centerByMass(fitBox(crop, box));
    const width = strokeWidth(digit);
    if (width >= C.STROKE_RANGE[0] && width <= C.STROKE_RANGE[1]) return digit;
    return restroke(crop, box, width) || digit;
  }

  /** The whole of prepare_image from decoded RGBA pixels (already composited on white). */
  function prepareRGBA(rgba, w, h) {
    const s = grayFromRGBA(rgba, w, h);
    return prepareGray(s.g, s.w, s.h);
  }

  /** Model input: (1, 1, 28, 28) float32, pixel / 255 normalised with the model's mean/std. */
  function normalise(digit, mean, std, scale = 1 / 255) {
    const x = new Float32Array(digit.length);
    for (let i = 0; i < digit.length; i++) x[i] = (digit[i] * scale - mean) / std;
    return x;
  }

  const api = { C, InputError, prepareRGBA, prepareGray, grayFromRGBA, shrink, normalise, strokeWidth,
    resize, rankFilter, pyRound, pixelBlock };
  root.MnistPreprocess = api;
  if (typeof module !== "undefined" && module.exports) module.exports = api;
})(typeof globalThis !== "undefined" ? globalThis : this);
