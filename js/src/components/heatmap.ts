/** Head heatmap: layers x heads on a canvas, for the selected step or for the prompt; coloured by
 * value or ("vs normal") by each head's z-score against the model's baseline. */
import { h, observeResize, observeTheme, sizeCanvas, themeColor, widthOf } from "../dom";
import { noAttentionLayers, type Payload } from "../payload";
import { css, fmt, HEAT_METRICS, heatColor, interpolate, legendEnds, legendText, metricDomain, normalize, RAMP_DIVERGE, RAMP_HEAT, zColor,
  type MetricDef } from "../scales";
import type { Store, ViewOptions } from "../store";

export interface HeatLayout { L: number; H: number; left: number; top: number; cw: number; ch: number; width: number; height: number }

export function heatLayout(L: number, H: number, width: number): HeatLayout {
  const left = 34, top = 16;
  const cw = Math.max(8, Math.min(44, Math.floor((width - left - 6) / Math.max(1, H))));
  const ch = Math.max(7, Math.min(16, Math.floor(cw * 0.6)));
  return { L, H, left, top, cw, ch, width: left + cw * H + 6, height: top + ch * L + 4 };
}

export type Hit = { layer: number | null; head: number | null } | null;

/** What a click at (x, y) selects: a cell, a whole layer (row label), or all heads (corner). */
export function hitCell(g: HeatLayout, x: number, y: number): Hit {
  const col = Math.floor((x - g.left) / g.cw), rowI = Math.floor((y - g.top) / g.ch);
  const inRows = rowI >= 0 && rowI < g.L, inCols = col >= 0 && col < g.H;
  if (x < g.left && y < g.top) return { layer: null, head: null };
  if (x < g.left && inRows) return { layer: rowI, head: null };
  if (inRows && inCols) return { layer: rowI, head: col };
  return null;
}

export interface HeatData {
  values: Float32Array;      // L*H, row-major (layer, head)
  entropy: Float32Array | null;
  concentration: Float32Array | null;
  label: string;
  unit: string;
  /** The value's fixed scale (scales.ts): lo..hi never depends on the step or the trace. */
  def: MetricDef;
  lo: number;
  hi: number;
  /** Layers without softmax attention (hybrid stacks): their row is NaN, drawn hatched as "no attention". */
  noAttention: Set<number>;
}

/** What a layer without softmax attention is, for its row label, tooltip and legend. */
export const NO_ATTENTION = "no attention (state-space / linear-attention / convolution block)";

/** The matrix the heatmap shows for the options and step (null when the data is missing). */
export function heatData(p: Payload, opts: ViewOptions, step: number | null): HeatData | null {
  const L = p.meta.n_layers, H = p.meta.n_heads, n = L * H;
  const pick = (name: string, s: number | null): Float32Array | null => {
    const a = p.arrays[name];
    if (!a || a.data.length === 0) return null;
    if (s === null) return a.data.length === n ? (a.data as Float32Array) : null;
    if (s < 0 || (s + 1) * n > a.data.length) return null;
    return (a.data as Float32Array).subarray(s * n, (s + 1) * n);
  };
  let entropy: Float32Array | null, concentration: Float32Array | null;
  if (opts.heat_source === "prompt") {
    entropy = pick("prompt_head_entropy", null);
    concentration = pick("prompt_head_concentration", null);
  } else {
    const s = step ?? 0;
    entropy = pick("head_entropy", s);
    concentration = pick("head_concentration", s);
  }
  let values: Float32Array | null;
  const v = opts.heat_source === "prompt" ? opts.heat_value : (opts.heat_value === "concentration" ? "concentration" : "entropy");
  if (v === "entropy") values = entropy;
  else if (v === "concentration") values = concentration;
  else if (v === "sink") values = pick("prompt_sink", null);
  else values = pick("prompt_basin", null);
  if (!values) return null;
  // the value's fixed domain, not this step's min..max: a colour means the same number at every step
  const def = HEAT_METRICS[v];
  const noAttention = noAttentionLayers(p.meta, opts.heat_source === "prompt" ? "prompt" : "step", L);
  return { values, entropy, concentration, label: def.label, unit: def.unit, def, lo: def.domain[0], hi: def.domain[1], noAttention };
}

/** Whether the payload carries z-scores against the model's baseline (a baseline exists). */
export function hasZ(p: Payload | null): boolean {
  if (!p) return false;
  const n = (p.meta.n_layers ?? 0) * (p.meta.n_heads ?? 0);
  return ["z_step_entropy", "z_step_concentration", "z_prompt_entropy", "z_prompt_concentration"]
    .some((k) => p.arrays[k] !== undefined && p.arrays[k].data.length === n && n > 0);
}

/** Why "vs normal" is not offered. */
export const NO_BASELINE = "no baseline for this model";

export interface ZData {
  /** z-score of each (layer, head), row-major; NaN where undefined. */
  z: Float32Array;
  /** The alarm line for |z| (null when the baseline has none). */
  threshold: number | null;
  /** Colours clip at ±limit (2 × threshold). */
  limit: number;
  label: string;
  /** Which heatmap value the z-scores are of, and of which pass (sink and basin: prompt only). */
  value: ZValue;
  prompt: boolean;
}

export type ZValue = "entropy" | "concentration" | "sink" | "basin";
/** The values "vs normal" can show per source: the baseline's per-head statistics. */
export function zValues(prompt: boolean): ZValue[] {
  return prompt ? ["entropy", "concentration", "sink", "basin"] : ["entropy", "concentration"];
}
const Z_WHAT: Record<ZValue, string> = {
  entropy: "attention entropy", concentration: "concentration (max weight)", sink: "attention to the first token",
  basin: "log basin (middle vs ends)",
};

/** The z-scores the "vs normal" mode shows for the options (null without a baseline). For the step
 * source they are of the mean over all steps (the baseline's statistic), whatever step is selected. */
export function zData(p: Payload, opts: ViewOptions): ZData | null {
  const prompt = opts.heat_source === "prompt";
  const value: ZValue = (zValues(prompt) as string[]).includes(opts.heat_value) ? opts.heat_value as ZValue : "entropy";
  const a = p.arrays[`z_${prompt ? "prompt" : "step"}_${value}`];
  const n = p.meta.n_layers * p.meta.n_heads;
  if (!a || a.data.length !== n || n === 0) return null;
  const t = p.meta.z_threshold;
  const threshold = typeof t === "number" && Number.isFinite(t) && t > 0 ? t : null;
  const what = Z_WHAT[value];
  const label = prompt ? `prompt ${what}` : `${what}, mean over steps`;
  return { z: a.data as Float32Array, threshold, limit: threshold !== null ? 2 * threshold : 8, label, value, prompt };
}

/** The legend text of the "vs normal" mode. */
export function zLegend(d: ZData): string {
  return d.threshold !== null ? `z vs this model's normal (|z| > ${fmt(d.threshold)} unusual)` : "z vs this model's normal (no alarm line)";
}

/** Hover text of a cell (or, with `head` null, a row label); null where nothing is said. */
export function heatTip(d: HeatData, H: number, layer: number, head: number | null): string | null {
  if (d.noAttention.has(layer)) return `layer ${layer} · ${NO_ATTENTION}`;
  if (head === null) return null;
  return `layer ${layer}, head ${head}: ${d.label} ${fmt(d.values[layer * H + head])} ${d.unit}`;
}

/** Hover text of a cell in the "vs normal" mode (the row label as in the value mode). */
export function zTip(z: ZData, d: HeatData, H: number, layer: number, head: number | null): string | null {
  if (d.noAttention.has(layer) || head === null) return heatTip(d, H, layer, head);
  const i = layer * H + head;
  const zi = z.z[i];
  const over = z.threshold !== null && Number.isFinite(zi) && Math.abs(zi) > z.threshold;
  const value = z.prompt ? ` ${fmt(d.values[i])} ${d.unit},` : "";
  return `layer ${layer}, head ${head}: ${z.label}${value} z ${fmt(zi)} vs this model's normal${over ? " (unusual)" : ""}`;
}

/** A row of a layer without attention: grey with diagonal hatching, labelled "no attention". */
function hatchRow(ctx: CanvasRenderingContext2D, x: number, y: number, w: number, hgt: number, base: string, ink: string): void {
  ctx.save();
  ctx.beginPath();
  ctx.rect(x, y, w, hgt);
  ctx.clip();
  ctx.fillStyle = base;
  ctx.fillRect(x, y, w, hgt);
  ctx.strokeStyle = ink;
  ctx.globalAlpha = 0.45;
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (let d = -hgt; d < w; d += 5) { ctx.moveTo(x + d, y + hgt); ctx.lineTo(x + d + hgt, y); }
  ctx.stroke();
  ctx.globalAlpha = 1;
  if (w >= 64 && hgt >= 8) {
    ctx.fillStyle = ink;
    ctx.textAlign = "center";
    ctx.fillText("no attention", x + w / 2, y + hgt / 2 + 3);
  }
  ctx.restore();
}

export type Mark = "collapsed" | "focused" | null;

/** Collapsed (entropy below the threshold, bits) wins over focused (max weight above it). */
export function headMark(entropy: number, conc: number, t: { collapsed_entropy_bits: number; focused_concentration: number }): Mark {
  if (entropy < t.collapsed_entropy_bits) return "collapsed";
  if (conc > t.focused_concentration) return "focused";
  return null;
}

/** Whether the payload carries a logit-lens matrix [T, L]. */
export function hasLens(p: Payload | null): boolean {
  const a = p?.arrays.lens_entropy;
  return Boolean(p && p.meta.has_lens && a && a.shape.length === 2 && a.data.length > 0);
}

export interface LensData {
  /** Entropy (bits), row-major (layer, step): L rows, T columns. */
  values: Float32Array;
  /** Top-1 token id, same layout. */
  top1: Int32Array;
  L: number;
  T: number;
  /** The fixed scale of the lens entropy (scales.ts HEAT_METRICS.lens_entropy), the same for every trace. */
  lo: number;
  hi: number;
  /** Text of each distinct top-1 id ("" when not decoded). */
  text: Map<number, string>;
}

/** The logit-lens view's matrix: the payload's [T, L] transposed to layers x steps (null without the lens). */
export function lensData(p: Payload): LensData | null {
  if (!hasLens(p)) return null;
  const e = p.arrays.lens_entropy, t1 = p.arrays.lens_top1;
  const [T, L] = e.shape;
  const values = new Float32Array(L * T), top1 = new Int32Array(L * T);
  for (let s = 0; s < T; s++) for (let l = 0; l < L; l++) {
    values[l * T + s] = e.data[s * L + l];
    if (t1 && t1.data.length === L * T) top1[l * T + s] = t1.data[s * L + l];
  }
  const text = new Map<number, string>();
  const ids = p.arrays.lens_top1_ids?.data, pieces = p.strings.lens_top1_text;
  if (ids && pieces) for (let i = 0; i < ids.length; i++) text.set(ids[i], pieces[i] ?? "");
  const [lo, hi] = HEAT_METRICS.lens_entropy.domain;
  return { values, top1, L, T, lo, hi, text };
}

/** Display text of a lens top-1 id: its decoded piece (JSON-quoted, so spaces show) or #id. */
export function lensToken(d: LensData, id: number): string {
  const t = d.text.get(id);
  return t ? JSON.stringify(t) : `#${id}`;
}

/** Layers x steps layout: narrower cells than the head grid, so long generations fit. */
export function lensLayout(L: number, T: number, width: number): HeatLayout {
  const left = 34, top = 16;
  const cw = Math.max(2, Math.min(24, Math.floor((width - left - 6) / Math.max(1, T))));
  const ch = Math.max(6, Math.min(12, Math.floor(300 / Math.max(1, L))));
  return { L, H: T, left, top, cw, ch, width: left + cw * T + 6, height: top + ch * L + 4 };
}

/** Clear the canvas and set the axis-label style (theme foreground, centred). */
function clearForLabels(ctx: CanvasRenderingContext2D, g: HeatLayout, fg: string): void {
  ctx.clearRect(0, 0, g.width, g.height);
  ctx.font = "9px sans-serif";
  ctx.fillStyle = fg;
  ctx.textAlign = "center";
}

export function mountHeatmap(el: HTMLElement, store: Store): () => void {
  const root = h("div", { class: "cv-heatmap", tabindex: "0" });
  const source = h("select", { class: "cv-heat-source", "aria-label": "heatmap source" });
  const value = h("select", { class: "cv-heat-value", "aria-label": "heatmap value" });
  const color = h("select", { class: "cv-heat-color", "aria-label": "heatmap colouring" },
    h("option", { value: "value", text: "values" }), h("option", { value: "z", text: "vs normal" }));
  const info = h("span", { class: "cv-muted cv-heat-info" });
  const canvas = h("canvas", { class: "cv-heat-canvas" });
  const legend = h("div", { class: "cv-legend cv-heat-legend" });
  const tip = h("div", { class: "cv-tip", hidden: "" });
  const title = h("span", { class: "cv-title", text: "Heads" });
  root.append(h("div", { class: "cv-header" }, title, source, value, color, info), canvas, legend, tip);
  el.append(root);
  let g = heatLayout(1, 1, 300);
  let current: HeatData | null = null;
  let zd: ZData | null = null;
  let lens: LensData | null = null;
  let mode: "heads" | "lens" = "heads";

  const syncSources = (withLens: boolean) => {
    const want = withLens ? 3 : 2;
    if (source.options.length === want) return;
    const opts = [h("option", { value: "step", text: "selected step" }), h("option", { value: "prompt", text: "prompt" })];
    if (withLens) opts.push(h("option", { value: "lens", text: "logit lens (layers × steps)" }));
    source.replaceChildren(...opts);
  };

  const drawLens = (d: LensData) => {
    mode = "lens";
    lens = d;
    current = null;
    zd = null;
    title.textContent = "Layers × steps";
    const sel = store.sel;
    g = lensLayout(d.L, d.T, Math.min(widthOf(root, 420), 720));
    const ctx = sizeCanvas(canvas, g.width, g.height);
    info.textContent = `logit lens: ${d.L} layers × ${d.T} steps`;
    root.dataset.rows = String(d.L);
    root.dataset.cols = String(d.T);
    root.dataset.cells = String(d.L * d.T);
    root.dataset.collapsed = "0";
    root.dataset.focused = "0";
    root.dataset.value = "lens_entropy";
    const fg = themeColor(root, "--jp-ui-font-color1", "#222");
    if (ctx) {
      clearForLabels(ctx, g, fg);
      const everyX = Math.max(1, Math.ceil(18 / g.cw));
      for (let s = 0; s < d.T; s += everyX) ctx.fillText(String(s), g.left + (s + 0.5) * g.cw, g.top - 4);
      ctx.textAlign = "right";
      const everyY = Math.max(1, Math.ceil(10 / g.ch));
      for (let l = 0; l < d.L; l += everyY) ctx.fillText(`L${l}`, g.left - 3, g.top + (l + 0.8) * g.ch);
      const gap = g.cw > 4 ? 1 : 0;
      for (let l = 0; l < d.L; l++) for (let s = 0; s < d.T; s++) {
        const v = d.values[l * d.T + s];
        ctx.fillStyle = heatColor(v, HEAT_METRICS.lens_entropy);
        ctx.fillRect(g.left + s * g.cw, g.top + l * g.ch, g.cw - gap, g.ch - 1);
      }
      ctx.strokeStyle = fg;
      ctx.lineWidth = 2;
      if (sel.step !== null && sel.step < d.T) ctx.strokeRect(g.left + sel.step * g.cw - 1, g.top - 1, g.cw + 1, d.L * g.ch + 1);
      if (sel.layer !== null && sel.layer < d.L) ctx.strokeRect(g.left - 1, g.top + sel.layer * g.ch - 1, d.T * g.cw + 1, g.ch + 1);
    }
    const lensDef = HEAT_METRICS.lens_entropy;
    scaleLegend(lensDef, `${lensDef.unit} · x: step, y: layer`,
      `${legendText(lensDef)}: ${lensDef.basis} · x: generated step, y: layer · hover a cell for the layer's top-1 token`);
  };

  const draw = () => {
    const p = store.data;
    const opts = store.opts;
    const d = p ? lensData(p) : null;
    syncSources(d !== null);
    const src = opts.heat_source === "lens" && !d ? "step" : opts.heat_source;
    source.value = src;
    value.hidden = src === "lens";
    const withZ = hasZ(p);
    const zOpt = color.options[1];
    zOpt.disabled = !withZ;
    zOpt.title = withZ ? "colour each head by its z-score against this model's normal" : NO_BASELINE;
    color.title = withZ ? "values, or z-scores against this model's normal" : `vs normal: ${NO_BASELINE}`;
    const zMode = withZ && opts.heat_color === "z" && src !== "lens";
    color.value = zMode ? "z" : "value";
    color.hidden = src === "lens";
    root.dataset.colorMode = zMode ? "z" : "value";
    const values: string[] = src === "prompt" && !zMode ? ["entropy", "concentration", "sink", "basin"] : zMode ? zValues(src === "prompt") : ["entropy", "concentration"];
    if (value.options.length !== values.length) value.replaceChildren(...values.map((v) => h("option", { value: v, text: v })));
    value.value = values.includes(opts.heat_value) ? opts.heat_value : "entropy";
    if (!p) { info.textContent = "waiting for the trace…"; sizeCanvas(canvas, 1, 1); return; }
    if (src === "lens" && d) { drawLens(d); return; }
    mode = "heads";
    lens = null;
    title.textContent = "Heads";
    const L = p.meta.n_layers, H = p.meta.n_heads;
    const sel = store.sel;
    const shown: ViewOptions = zMode && !values.includes(opts.heat_value) ? { ...opts, heat_value: "entropy" } : opts;
    current = heatData(p, shown, sel.step);
    zd = zMode ? zData(p, shown) : null;
    g = heatLayout(L, H, Math.min(widthOf(root, 420), 520));
    const ctx = sizeCanvas(canvas, g.width, g.height);
    info.textContent = opts.heat_source === "prompt" ? "prompt pass" : zd ? "all steps" : `step ${sel.step ?? 0}`;
    root.dataset.rows = String(L);
    root.dataset.cols = String(H);
    if (!current) { root.dataset.cells = "0"; root.dataset.noAttention = ""; info.textContent += " · no data (prompt telemetry off?)"; return; }
    const noAtt = current.noAttention;
    root.dataset.noAttention = Array.from(noAtt).join(",");
    if (sel.layer !== null && noAtt.has(sel.layer)) info.textContent += ` · layer ${sel.layer}: no attention`;
    const th = p.meta.thresholds ?? { collapsed_entropy_bits: 0.1, focused_concentration: 0.9 };
    let cells = 0, collapsed = 0, focused = 0, unusual = 0;
    const fg = themeColor(root, "--jp-ui-font-color1", "#222");
    if (ctx) {
      clearForLabels(ctx, g, fg);
      for (let hh = 0; hh < H; hh++) ctx.fillText(`h${hh}`, g.left + (hh + 0.5) * g.cw, g.top - 4);
      ctx.textAlign = "left";
      ctx.fillText("all", 2, g.top - 4);
      ctx.textAlign = "right";
      const every = Math.max(1, Math.ceil(10 / g.ch));
      for (let l = 0; l < L; l += every) ctx.fillText(`L${l}`, g.left - 3, g.top + (l + 0.8) * g.ch);
      const base = themeColor(root, "--jp-layout-color2", "#e4e4e4");
      for (const l of noAtt) if (l < L) hatchRow(ctx, g.left, g.top + l * g.ch, H * g.cw - 1, g.ch - 1, base, fg);
    }
    for (let l = 0; l < L; l++) for (let hh = 0; hh < H; hh++) {
      cells++;
      if (noAtt.has(l)) continue; // drawn hatched above: "no attention", never a colour of the scale
      const i = l * H + hh;
      const v = current.values[i];
      const x = g.left + hh * g.cw, y = g.top + l * g.ch;
      const t = normalize(v, metricDomain(current.def));
      const m = current.entropy && current.concentration ? headMark(current.entropy[i], current.concentration[i], th) : null;
      if (m === "collapsed") collapsed++; else if (m === "focused") focused++;
      if (zd) {
        const z = zd.z[i];
        const over = zd.threshold !== null && Number.isFinite(z) && Math.abs(z) > zd.threshold;
        if (over) unusual++;
        if (!ctx) continue;
        ctx.fillStyle = zColor(z, zd.limit);
        ctx.fillRect(x, y, g.cw - 1, g.ch - 1);
        if (over) { // beyond the alarm line: outlined
          ctx.strokeStyle = fg;
          ctx.lineWidth = 1.5;
          ctx.strokeRect(x + 1, y + 1, g.cw - 3, g.ch - 3);
        }
        continue;
      }
      if (!ctx) continue;
      ctx.fillStyle = heatColor(v, current.def);
      ctx.fillRect(x, y, g.cw - 1, g.ch - 1);
      if (m) {
        ctx.strokeStyle = m === "collapsed" ? "#ff2d2d" : t > 0.6 ? "#202020" : "#ffffff"; // readable on bright cells
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        if (m === "collapsed") { ctx.moveTo(x + 2, y + 2); ctx.lineTo(x + g.cw - 3, y + g.ch - 3); ctx.moveTo(x + g.cw - 3, y + 2); ctx.lineTo(x + 2, y + g.ch - 3); }
        else ctx.arc(x + g.cw / 2, y + g.ch / 2, Math.min(g.cw, g.ch) / 2 - 2, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }
    if (ctx && sel.layer !== null && sel.layer < L) {
      ctx.strokeStyle = fg;
      ctx.lineWidth = 2;
      if (sel.head !== null && sel.head < H) ctx.strokeRect(g.left + sel.head * g.cw - 1, g.top + sel.layer * g.ch - 1, g.cw + 1, g.ch + 1);
      else ctx.strokeRect(g.left - 1, g.top + sel.layer * g.ch - 1, H * g.cw + 1, g.ch + 1);
    }
    root.dataset.cells = String(cells);
    root.dataset.collapsed = String(collapsed);
    root.dataset.focused = String(focused);
    root.dataset.value = shown.heat_value;
    root.dataset.unusual = String(unusual);
    if (zd) {
      // compact, one line: the scale and what |z| is unusual; which statistic and the colours' meaning on hover
      const lim = zd.limit;
      const full = `${zLegend(zd)} · ${zd.label} · colours clip at ±${fmt(lim)} · blue below, red above normal` +
        (zd.threshold !== null ? ` · outlined: beyond ±${fmt(zd.threshold)}` : "");
      legend.title = full;
      delete legend.dataset.scale;
      legend.replaceChildren(
        h("span", { class: "cv-legend-lo", text: `${fmt(-lim)}` }),
        h("span", { class: "cv-legend-bar", style: `background: linear-gradient(to right, ${[0, 0.25, 0.5, 0.75, 1].map((t) => css(interpolate(RAMP_DIVERGE, t))).join(", ")})` }),
        h("span", { class: "cv-legend-hi", text: `+${fmt(lim)}` }),
        h("span", { class: "cv-legend-unit cv-heat-z-legend", title: full, text: zLegend(zd) }),
      );
      noAttLegend(noAtt);
      return;
    }
    const def = current.def;
    const marks = def.key === "entropy" || def.key === "concentration";
    scaleLegend(def, `${def.unit}${marks ? " · ✕ collapsed · ○ focused" : ""}`,
      `${legendText(def)}: ${def.basis}` +
      (marks ? ` · ✕ collapsed: entropy < ${th.collapsed_entropy_bits} bits · ○ focused: max weight > ${th.focused_concentration}` : ""));
    noAttLegend(noAtt);
  };

  /** One compact legend line: "lo [ramp] hi unit"; the full statement of the scale (domain, unit, clipping, why) as its tooltip. */
  const scaleLegend = (def: MetricDef, short: string, full: string) => {
    const ends = legendEnds(def);
    legend.title = full;
    legend.dataset.scale = legendText(def);
    legend.replaceChildren(
      h("span", { class: "cv-legend-lo", text: ends.lo }),
      h("span", { class: "cv-legend-bar", style: `background: linear-gradient(to right, ${[0, 0.25, 0.5, 0.75, 1].map((t) => css(interpolate(RAMP_HEAT, t))).join(", ")})` }),
      h("span", { class: "cv-legend-hi", text: ends.hi }),
      h("span", { class: "cv-legend-unit", title: full, text: short }),
    );
  };

  /** Layers without attention: a hatched swatch and their numbers (the full reason on hover). */
  const noAttLegend = (noAtt: Set<number>) => {
    if (!noAtt.size) return;
    const layers = `layer${noAtt.size > 1 ? "s" : ""} ${Array.from(noAtt).join(", ")}`;
    legend.append(h("span", { class: "cv-noattn-swatch" }), h("span", {
      class: "cv-legend-unit cv-heat-noattn", title: `${NO_ATTENTION}: ${layers}`, text: `no attention: ${layers}`,
    }));
  };

  const at = (ev: MouseEvent) => {
    const r = canvas.getBoundingClientRect();
    return hitCell(g, ev.clientX - r.left, ev.clientY - r.top);
  };
  canvas.addEventListener("click", (ev) => {
    const hit = at(ev);
    if (!hit) return;
    if (mode === "lens") store.select(hit.head === null ? { layer: hit.layer, head: null } : { step: hit.head, layer: hit.layer, head: null });
    else store.select(hit);
  });
  canvas.addEventListener("mousemove", (ev) => {
    const hit = at(ev);
    if (!hit || hit.layer === null || (mode === "heads" ? !current : !lens)) { tip.hidden = true; return; }
    if (mode === "lens" && lens) {
      if (hit.head === null) { tip.hidden = true; return; }
      const i = hit.layer * lens.T + hit.head;
      const gen = store.data?.strings.generated_tokens?.[hit.head];
      tip.textContent = `step ${hit.head}${gen !== undefined ? ` (${JSON.stringify(gen)})` : ""}, layer ${hit.layer}: ` +
        `lens entropy ${fmt(lens.values[i])} bits · top-1 ${lensToken(lens, lens.top1[i])}`;
    } else if (current) {
      const text = zd ? zTip(zd, current, g.H, hit.layer, hit.head) : heatTip(current, g.H, hit.layer, hit.head);
      if (text === null) { tip.hidden = true; return; }
      tip.textContent = text;
    }
    const rb = root.getBoundingClientRect(), cb = canvas.getBoundingClientRect();
    tip.style.left = `${cb.left - rb.left + g.left + ((hit.head ?? -1) + 1) * g.cw + 4}px`;
    tip.style.top = `${cb.top - rb.top + g.top + hit.layer * g.ch}px`;
    tip.hidden = false;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  source.addEventListener("change", () => store.setOptions({ heat_source: source.value as ViewOptions["heat_source"] }));
  value.addEventListener("change", () => store.setOptions({ heat_value: value.value as ViewOptions["heat_value"] }));
  color.addEventListener("change", () => store.setOptions({ heat_color: color.value as ViewOptions["heat_color"] }));
  root.addEventListener("keydown", (ev) => {
    const p = store.data;
    if (!p || ev.target instanceof HTMLSelectElement) return;
    const L = p.meta.n_layers, H = p.meta.n_heads;
    const { layer, head, step } = store.sel;
    const l0 = layer ?? 0, h0 = head ?? 0;
    const moves: Record<string, [number, number]> = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    const m = moves[ev.key];
    if (!m) return;
    if (mode === "lens" && lens) store.select({ layer: Math.min(lens.L - 1, Math.max(0, l0 + m[0])), step: Math.min(lens.T - 1, Math.max(0, (step ?? 0) + m[1])) });
    else store.select({ layer: Math.min(L - 1, Math.max(0, l0 + m[0])), head: Math.min(H - 1, Math.max(0, h0 + m[1])) });
    ev.preventDefault();
  });

  store.on(["data", "selection", "options"], draw);
  const stop = observeResize(root, draw);
  // a light/dark switch repaints the labels, outlines and hatching in the new theme's colours at once
  let themeDraws = 0;
  const stopTheme = observeTheme(() => { draw(); root.dataset.themeDraws = String(++themeDraws); });
  draw();
  return () => { stop(); stopTheme(); root.remove(); };
}
