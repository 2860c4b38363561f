/** Head heatmap: layers x heads on a canvas, for the selected step or for the prompt. */
import { h, observeResize, sizeCanvas, themeColor, widthOf } from "../dom";
import type { Payload } from "../payload";
import { css, fmt, interpolate, RAMP_HEAT } from "../scales";
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
  lo: number;
  hi: number;
}

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
  let values: Float32Array | null, label: string, unit: string;
  const v = opts.heat_source === "prompt" ? opts.heat_value : (opts.heat_value === "concentration" ? "concentration" : "entropy");
  if (v === "entropy") { values = entropy; label = "attention entropy"; unit = "bits"; }
  else if (v === "concentration") { values = concentration; label = "concentration (max weight)"; unit = "probability"; }
  else if (v === "sink") { values = pick("prompt_sink", null); label = "sink (attention to token 0)"; unit = "probability"; }
  else { values = pick("prompt_basin", null); label = "basin (middle ÷ other keys)"; unit = "ratio"; }
  if (!values) return null;
  let lo = 0, hi = v === "entropy" || v === "basin" ? 0 : 1;
  if (hi === 0) for (let i = 0; i < values.length; i++) if (Number.isFinite(values[i]) && values[i] > hi) hi = values[i];
  if (hi <= lo) hi = lo + 1;
  return { values, entropy, concentration, label, unit, lo, hi };
}

export type Mark = "collapsed" | "focused" | null;

/** Collapsed (entropy below the threshold, bits) wins over focused (max weight above it). */
export function headMark(entropy: number, conc: number, t: { collapsed_entropy_bits: number; focused_concentration: number }): Mark {
  if (entropy < t.collapsed_entropy_bits) return "collapsed";
  if (conc > t.focused_concentration) return "focused";
  return null;
}

export function mountHeatmap(el: HTMLElement, store: Store): () => void {
  const root = h("div", { class: "cv-heatmap", tabindex: "0" });
  const source = h("select", { class: "cv-heat-source", "aria-label": "heatmap source" },
    h("option", { value: "step", text: "selected step" }), h("option", { value: "prompt", text: "prompt" }));
  const value = h("select", { class: "cv-heat-value", "aria-label": "heatmap value" });
  const info = h("span", { class: "cv-muted cv-heat-info" });
  const canvas = h("canvas", { class: "cv-heat-canvas" });
  const legend = h("div", { class: "cv-legend cv-heat-legend" });
  const tip = h("div", { class: "cv-tip", hidden: "" });
  root.append(h("div", { class: "cv-header" }, h("span", { class: "cv-title", text: "Heads" }), source, value, info), canvas, legend, tip);
  el.append(root);
  let g = heatLayout(1, 1, 300);
  let current: HeatData | null = null;

  const draw = () => {
    const p = store.data;
    const opts = store.opts;
    source.value = opts.heat_source;
    const values = opts.heat_source === "prompt" ? ["entropy", "concentration", "sink", "basin"] : ["entropy", "concentration"];
    if (value.options.length !== values.length) value.replaceChildren(...values.map((v) => h("option", { value: v, text: v })));
    value.value = values.includes(opts.heat_value) ? opts.heat_value : "entropy";
    if (!p) { info.textContent = "waiting for the trace…"; sizeCanvas(canvas, 1, 1); return; }
    const L = p.meta.n_layers, H = p.meta.n_heads;
    const sel = store.sel;
    current = heatData(p, opts, sel.step);
    g = heatLayout(L, H, Math.min(widthOf(root, 420), 520));
    const ctx = sizeCanvas(canvas, g.width, g.height);
    info.textContent = opts.heat_source === "prompt" ? "prompt pass" : `step ${sel.step ?? 0}`;
    root.dataset.rows = String(L);
    root.dataset.cols = String(H);
    if (!current) { root.dataset.cells = "0"; info.textContent += " · no data (prompt telemetry off?)"; return; }
    const th = p.meta.thresholds ?? { collapsed_entropy_bits: 0.1, focused_concentration: 0.9 };
    let cells = 0, collapsed = 0, focused = 0;
    const fg = themeColor(root, "--jp-ui-font-color1", "#222");
    if (ctx) {
      ctx.clearRect(0, 0, g.width, g.height);
      ctx.font = "9px sans-serif";
      ctx.fillStyle = fg;
      ctx.textAlign = "center";
      for (let hh = 0; hh < H; hh++) ctx.fillText(`h${hh}`, g.left + (hh + 0.5) * g.cw, g.top - 4);
      ctx.textAlign = "left";
      ctx.fillText("all", 2, g.top - 4);
      ctx.textAlign = "right";
      const every = Math.max(1, Math.ceil(10 / g.ch));
      for (let l = 0; l < L; l += every) ctx.fillText(`L${l}`, g.left - 3, g.top + (l + 0.8) * g.ch);
    }
    for (let l = 0; l < L; l++) for (let hh = 0; hh < H; hh++) {
      const i = l * H + hh;
      const v = current.values[i];
      const x = g.left + hh * g.cw, y = g.top + l * g.ch;
      const t = (v - current.lo) / (current.hi - current.lo);
      cells++;
      const m = current.entropy && current.concentration ? headMark(current.entropy[i], current.concentration[i], th) : null;
      if (m === "collapsed") collapsed++; else if (m === "focused") focused++;
      if (!ctx) continue;
      ctx.fillStyle = Number.isFinite(v) ? css(interpolate(RAMP_HEAT, t)) : "#888";
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
    root.dataset.value = opts.heat_value;
    legend.replaceChildren(
      h("span", { text: fmt(current.lo) }),
      h("span", { class: "cv-legend-bar", style: `background: linear-gradient(to right, ${[0, 0.25, 0.5, 0.75, 1].map((t) => css(interpolate(RAMP_HEAT, t))).join(", ")})` }),
      h("span", { text: fmt(current.hi) }),
      h("span", { class: "cv-legend-unit", text: `${current.label}, ${current.unit} · ✕ collapsed (<${th.collapsed_entropy_bits} bits) · ○ focused (>${th.focused_concentration})` }),
    );
  };

  const at = (ev: MouseEvent) => {
    const r = canvas.getBoundingClientRect();
    return hitCell(g, ev.clientX - r.left, ev.clientY - r.top);
  };
  canvas.addEventListener("click", (ev) => { const hit = at(ev); if (hit) store.select(hit); });
  canvas.addEventListener("mousemove", (ev) => {
    const hit = at(ev);
    if (!hit || hit.layer === null || hit.head === null || !current) { tip.hidden = true; return; }
    const v = current.values[hit.layer * g.H + hit.head];
    tip.textContent = `layer ${hit.layer}, head ${hit.head}: ${current.label} ${fmt(v)} ${current.unit}`;
    const rb = root.getBoundingClientRect(), cb = canvas.getBoundingClientRect();
    tip.style.left = `${cb.left - rb.left + g.left + (hit.head + 1) * g.cw + 4}px`;
    tip.style.top = `${cb.top - rb.top + g.top + hit.layer * g.ch}px`;
    tip.hidden = false;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  source.addEventListener("change", () => store.setOptions({ heat_source: source.value as ViewOptions["heat_source"] }));
  value.addEventListener("change", () => store.setOptions({ heat_value: value.value as ViewOptions["heat_value"] }));
  root.addEventListener("keydown", (ev) => {
    const p = store.data;
    if (!p || ev.target instanceof HTMLSelectElement) return;
    const L = p.meta.n_layers, H = p.meta.n_heads;
    const { layer, head } = store.sel;
    const l0 = layer ?? 0, h0 = head ?? 0;
    const moves: Record<string, [number, number]> = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    const m = moves[ev.key];
    if (!m) return;
    store.select({ layer: Math.min(L - 1, Math.max(0, l0 + m[0])), head: Math.min(H - 1, Math.max(0, h0 + m[1])) });
    ev.preventDefault();
  });

  store.on(["data", "selection", "options"], draw);
  const stop = observeResize(root, draw);
  draw();
  return () => { stop(); root.remove(); };
}
