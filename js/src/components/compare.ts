/**
 * Compare view: two traces side by side (Python's `compare_payload`, analysis/compare.py): both
 * verdicts, the prompts with the tokens that differ marked, the answers aligned step by step and
 * coloured by one metric, the metric's curves overlaid, the b − a heatmap of a per-head statistic
 * (same architecture) or the two per-layer profiles (different shapes), and the ranked table of
 * the largest differences. The view state is the `selection` trait: {stat, layer, head, metric}.
 */
import { h, observeResize, observeTheme, sizeCanvas, themeColor, widthOf } from "../dom";
import type { Payload, TraceMeta } from "../payload";
import { css, diffScale, fmt, HEAT_METRICS, interpolate, legendEnds, legendText, METRICS, metricDef, metricDomain, RAMP_ALARM,
  RAMP_DIVERGE, showToken, tokenColor, zColor, type DiffScale } from "../scales";
import type { Store } from "../store";
import { blameText, lightTitle, verdictInfo } from "./badge";
import { heatLayout, hitCell, type HeatLayout } from "./heatmap";
import { curveLayout, curveX, curveY, type CurveLayout } from "./timeline";

export type Side = "a" | "b";

/** The compare view's state (the `selection` trait). */
export interface CompareSelection {
  /** The statistic of the heatmap (a per-head statistic) or, for different shapes, of the profiles. */
  stat: string;
  layer: number | null;
  head: number | null;
  /** The timeline metric of the answers' colours and the curves. */
  metric: string;
}

/** The per-head statistics of the payload (meta.head_stats). */
export function headStats(meta: TraceMeta): string[] {
  return Array.isArray(meta.head_stats) && meta.head_stats.length ? meta.head_stats.map(String)
    : ["step_entropy", "step_concentration", "prompt_entropy", "prompt_concentration", "prompt_sink", "prompt_log_basin"];
}

/** The statistics with a per-layer profile (meta.layer_stats). */
export function layerStats(meta: TraceMeta): string[] {
  return Array.isArray(meta.layer_stats) && meta.layer_stats.length ? meta.layer_stats.map(String) : headStats(meta);
}

/** The statistics the stat selector offers: per-head ones for the difference heatmap (same shape),
 * every per-layer profile otherwise. */
export function statChoices(meta: TraceMeta): string[] {
  return meta.same_shape ? headStats(meta) : layerStats(meta);
}

const asIndex = (v: unknown): number | null => (typeof v === "number" && Number.isInteger(v) && v >= 0 ? v : null);

/** The view state from the raw `selection` trait, with defaults and out-of-range values dropped (pure). */
export function compareSelection(raw: Record<string, any> | null | undefined, meta: TraceMeta): CompareSelection {
  const r = raw ?? {};
  const stats = statChoices(meta);
  const stat = typeof r.stat === "string" && stats.includes(r.stat) ? r.stat : stats[0];
  const metric = METRICS.some((m) => m.key === r.metric) ? String(r.metric) : "entropy";
  const [L, H] = Array.isArray(meta.shape_a) ? meta.shape_a : [0, 0];
  // a cell exists only with the same architecture (one layers × heads grid for both runs)
  let layer = meta.same_shape ? asIndex(r.layer) : null, head = asIndex(r.head);
  if (layer === null || layer >= L) { layer = null; head = null; }
  if (head !== null && head >= H) head = null;
  return { stat, layer, head, metric };
}

/** A human name of a statistic (meta.stats) with its unit. */
export function statLabel(meta: TraceMeta, stat: string): { label: string; unit: string } {
  const s = meta.stats?.[stat];
  return { label: String(s?.label ?? stat), unit: String(s?.unit ?? "") };
}

export interface DiffData { values: Float32Array; L: number; H: number; scale: DiffScale; stat: string }

/** The b − a matrix of a per-head statistic, layers × heads (null without it: different shapes). */
export function diffData(p: Payload, stat: string): DiffData | null {
  if (!p.meta.same_shape) return null;
  const a = p.arrays[`diff_${stat}`];
  if (!a || a.shape.length !== 2) return null;
  const [L, H] = a.shape;
  return { values: a.data as Float32Array, L, H, scale: diffScale(stat), stat };
}

/** "B − A, bits, ±3 (clipped)": what the heatmap's colours mean. */
export function diffLegendText(scale: DiffScale, labels: [string, string]): string {
  return `${labels[1]} − ${labels[0]}, ${scale.unit || "value"}, ±${fmt(scale.limit)} (clipped)`;
}

/** A signed number: "+0.5", "−1.2", "0". */
export function signed(v: number): string {
  if (!Number.isFinite(v)) return fmt(v);
  return v > 0 ? `+${fmt(v)}` : v < 0 ? `−${fmt(-v)}` : "0";
}

/** Hover text of a heatmap cell. */
export function diffTip(d: DiffData, layer: number, head: number): string {
  const v = d.values[layer * d.H + head];
  if (!Number.isFinite(v)) return `layer ${layer} head ${head}: Δ = – (undefined in one run: no attention there)`;
  return `layer ${layer} head ${head}: Δ = ${signed(v)}${d.scale.unit ? ` ${d.scale.unit}` : ""}` +
    (Math.abs(v) > d.scale.limit ? ` (beyond ±${fmt(d.scale.limit)}: clipped)` : "");
}

/** One row of the ranked differences (meta.differences). */
export interface DiffRow { stat: string; layer: number | null; head: number | null; a: number; b: number; delta: number; scaled: number; text: string }

export function diffRows(meta: TraceMeta): DiffRow[] {
  if (!Array.isArray(meta.differences)) return [];
  const num = (v: unknown) => (typeof v === "number" ? v : NaN);
  return meta.differences.map((d: any) => ({
    stat: String(d.stat), layer: asIndex(d.layer), head: asIndex(d.head), a: num(d.a), b: num(d.b), delta: num(d.delta),
    scaled: num(d.scaled), text: String(d.text ?? ""),
  }));
}

/** The timeline metric that shows a run statistic (its row selects that metric). */
export const RUN_METRIC: Record<string, string> = { entropy_mean: "entropy", surprisal_mean: "surprisal", margin_mean: "top_k_margin" };

/** What a click on a ranked row selects (pure): a per-head statistic its stat, layer and head; a
 * per-layer statistic its layer; a run statistic its metric. */
export function rowTarget(r: DiffRow, meta: TraceMeta): Partial<CompareSelection> {
  if (r.layer !== null && r.head !== null && meta.same_shape && headStats(meta).includes(r.stat)) return { stat: r.stat, layer: r.layer, head: r.head };
  if (r.layer !== null) return meta.same_shape ? { layer: r.layer, head: null } : { stat: r.stat };
  return { layer: null, head: null, ...(RUN_METRIC[r.stat] ? { metric: RUN_METRIC[r.stat] } : {}) };
}

/** Whether a ranked row is what the selection shows. */
export function rowSelected(r: DiffRow, s: CompareSelection, meta: TraceMeta): boolean {
  if (r.layer === null) return false;
  if (r.head !== null) return r.stat === s.stat && r.layer === s.layer && r.head === s.head;
  if (!meta.same_shape) return r.stat === s.stat;
  return r.layer === s.layer && s.head === null && !headStats(meta).includes(r.stat);
}

/** The two sides' colours and line styles: blue solid, orange dashed (tells apart in greyscale too). */
export const SIDE_COLOR: Record<Side, string> = { a: "rgb(25, 118, 210)", b: "rgb(230, 97, 0)" };
export const SIDE_DASH: Record<Side, number[]> = { a: [], b: [6, 4] };

/** The y scale of a profile: the heatmap's fixed domain for per-head statistics, else both profiles' range. */
export function profileDomain(stat: string, a: ArrayLike<number>, b: ArrayLike<number>): { lo: number; hi: number; fixed: boolean } {
  const fixed: Record<string, [number, number]> = {
    step_entropy: HEAT_METRICS.entropy.domain as [number, number], prompt_entropy: HEAT_METRICS.entropy.domain as [number, number],
    step_concentration: [0, 1], prompt_concentration: [0, 1], prompt_sink: [0, 1],
    prompt_log_basin: [Math.log(HEAT_METRICS.basin.domain[0]), Math.log(HEAT_METRICS.basin.domain[1])],
  };
  if (fixed[stat]) return { lo: fixed[stat][0], hi: fixed[stat][1], fixed: true };
  let lo = Infinity, hi = -Infinity;
  for (const arr of [a, b]) for (let i = 0; i < arr.length; i++) { const v = arr[i]; if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); } }
  if (!Number.isFinite(lo)) return { lo: 0, hi: 1, fixed: false };
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const pad = 0.05 * (hi - lo);
  return { lo: lo - pad, hi: hi + pad, fixed: false };
}

/** Relative depth of layer l of L: 0 (first) .. 1 (last). */
export function relDepth(l: number, L: number): number {
  return L <= 1 ? 0.5 : l / (L - 1);
}

function values(p: Payload, name: string): Float32Array {
  const a = p.arrays[name];
  return a ? (a.data as Float32Array) : new Float32Array(0);
}

const shownTok = (s: string) => showToken(s).replace(/\n/g, "");

export function mountCompare(el: HTMLElement, store: Store): () => void {
  const model = store.model;
  const root = h("div", { class: "cv-compare" });
  el.append(root);
  const tip = h("div", { class: "cv-tip", hidden: "" });

  // the parts rebuilt on a new payload; redrawn in place on a selection change
  let metricSel: HTMLSelectElement | null = null;
  let statSel: HTMLSelectElement | null = null;
  let tokenLegend: HTMLElement | null = null;
  let genSpans: Record<Side, HTMLElement[]> = { a: [], b: [] };
  let curves: HTMLCanvasElement | null = null;
  let heat: HTMLCanvasElement | null = null;
  let heatBox: HTMLElement | null = null;
  let heatInfo: HTMLElement | null = null;
  let heatLegend: HTMLElement | null = null;
  let profiles: HTMLCanvasElement | null = null;
  let why: HTMLElement | null = null;
  let tableRows: Array<[HTMLTableRowElement, DiffRow]> = [];
  let g: HeatLayout = heatLayout(1, 1, 300);
  let shownDiff: DiffData | null = null;
  let curveG: CurveLayout = curveLayout(0, 600);

  const meta = (): TraceMeta => store.data?.meta ?? {};
  const labels = (): [string, string] => {
    const l = meta().labels;
    return Array.isArray(l) && l.length === 2 ? [String(l[0]), String(l[1])] : ["A", "B"];
  };
  const sel = (): CompareSelection => compareSelection(model.get("selection"), meta());
  const setSel = (patch: Partial<CompareSelection>) => {
    const cur = sel();
    const next = { ...cur, ...patch };
    if ((Object.keys(next) as (keyof CompareSelection)[]).every((k) => next[k] === cur[k])) return;
    model.set("selection", { ...(model.get("selection") ?? {}), ...next });
    try { model.save_changes(); } catch { /* no kernel (static HTML): the change stays local */ }
  };

  const build = () => {
    root.replaceChildren();
    genSpans = { a: [], b: [] };
    curves = heat = profiles = null;
    heatBox = heatInfo = heatLegend = why = tokenLegend = null;
    metricSel = statSel = null;
    tableRows = [];
    shownDiff = null;
    const p = store.data;
    if (!p) {
      root.dataset.ready = "";
      root.append(h("div", { class: "cv-muted cv-cmp-waiting", text: "waiting for the comparison…" }));
      return;
    }
    const m = p.meta;
    const [la, lb] = labels();
    root.dataset.samePrompt = String(Boolean(m.same_prompt));
    root.dataset.sameShape = String(Boolean(m.same_shape));
    root.dataset.divergedAt = m.diverged_at === null || m.diverged_at === undefined ? "" : String(m.diverged_at);

    // header: who is compared, the summary's first line, the scale of the ranking
    const names: string[] = Array.isArray(m.model_names) ? m.model_names.map(String) : ["", ""];
    const differ = names[0] !== names[1] && (names[0] || names[1]);
    const title = h("span", { class: "cv-cmp-labels" },
      h("span", { class: "cv-cmp-side", "data-side": "a", text: la }), differ && names[0] ? h("span", { class: "cv-muted", text: ` (${names[0]})` }) : "",
      " vs ",
      h("span", { class: "cv-cmp-side", "data-side": "b", text: lb }), differ && names[1] ? h("span", { class: "cv-muted", text: ` (${names[1]})` }) : "");
    const header = h("div", { class: "cv-cmp-header" }, title);
    if (!differ && names[0]) header.append(h("span", { class: "cv-muted", text: `· ${names[0]}` }));
    const summary = String(m.summary ?? "");
    header.append(h("span", { class: "cv-cmp-summary", title: summary, text: summary.split("\n")[0] }));
    if (m.scale_source) header.append(h("span", { class: "cv-cmp-scale cv-muted", text: `differences ranked in units of ${m.scale_source}` }));
    root.append(header);

    // both verdicts
    const verdicts = h("div", { class: "cv-cmp-verdicts" });
    const vs = Array.isArray(m.verdicts) ? m.verdicts : [];
    (["a", "b"] as Side[]).forEach((side, i) => {
      const raw = vs[i];
      const box = h("div", { class: "cv-cmp-verdict", "data-side": side });
      if (!raw || typeof raw !== "object" || typeof raw.color !== "string") {
        box.dataset.color = "none";
        box.append(h("div", { class: "cv-cmp-verdict-head" }, h("span", { class: "cv-cmp-side", text: side === "a" ? la : lb }),
          h("span", { class: "cv-light cv-pending" }), h("span", { class: "cv-muted", text: "no verdict" })));
      } else {
        const v = verdictInfo({ verdict: raw });
        box.dataset.color = v.color;
        const t = lightTitle(v);
        box.append(h("div", { class: "cv-cmp-verdict-head" }, h("span", { class: "cv-cmp-side", text: side === "a" ? la : lb }),
          h("span", { class: `cv-light cv-${v.color}`, title: t, role: "img", "aria-label": `verdict ${v.color}: ${t}` }),
          h("span", { class: "cv-verdict", text: v.sentence })));
        if (v.blame.length) {
          const ul = h("ul", { class: "cv-blame" });
          for (const b of v.blame.slice(0, 3)) ul.append(h("li", { class: "cv-blame-run", text: blameText(b) }));
          if (v.blame.length > 3) ul.append(h("li", { class: "cv-muted", text: `+${v.blame.length - 3} more` }));
          box.append(ul);
        }
      }
      verdicts.append(box);
    });
    root.append(verdicts);

    // prompts: once when they are the same, else both with the differing tokens marked
    const prompts = h("div", { class: "cv-cmp-prompts" });
    const promptBlock = (side: Side | "both", label: string, tokens: string[], changed: ArrayLike<number> | null): HTMLElement | null => {
      const box = h("div", { class: "cv-cmp-prompt", "data-side": side });
      box.append(h("span", { class: "cv-cmp-rowlabel", text: label }));
      let n = 0, first: HTMLElement | null = null;
      for (let i = 0; i < tokens.length; i++) {
        const on = Boolean(changed && changed[i]);
        const span = h("span", { class: `cv-tok cv-prompt${on ? " cv-changed" : ""}`, "data-token": String(i), text: showToken(tokens[i]) });
        if (on) { n++; span.title = `token ${i}: differs from the other prompt`; first ??= span; }
        box.append(span);
      }
      box.dataset.changed = String(n);
      prompts.append(box);
      return first;
    };
    const pa = p.strings.a_prompt_tokens ?? [], pb = p.strings.b_prompt_tokens ?? [];
    let firstChanged: HTMLElement | null = null;
    if (m.same_prompt) {
      promptBlock("both", `same prompt (${pa.length} tokens) `, pa, null);
    } else {
      const ca = p.arrays.a_changed?.data ?? null, cb = p.arrays.b_changed?.data ?? null;
      firstChanged = promptBlock("a", `${la} `, pa, ca);
      promptBlock("b", `${lb} `, pb, cb);
      prompts.append(h("div", { class: "cv-muted cv-cmp-note" },
        h("span", { class: "cv-tok cv-changed", text: "marked" }), " tokens differ from the other prompt (changed, inserted or deleted)"));
    }
    root.append(h("div", { class: "cv-cmp-section" }, h("div", { class: "cv-header" }, h("span", { class: "cv-title", text: "Prompts" })), prompts));

    // answers, aligned step by step (a two-row table: step i of A above step i of B)
    metricSel = h("select", { class: "cv-cmp-metric", "aria-label": "metric" });
    for (const d of METRICS) metricSel.append(h("option", { value: d.key, text: d.label }));
    tokenLegend = h("div", { class: "cv-legend cv-cmp-token-legend" });
    const dAt = typeof m.diverged_at === "number" ? m.diverged_at : null;
    const ga = p.strings.a_generated_tokens ?? [], gb = p.strings.b_generated_tokens ?? [];
    const partText = dAt === null ? "the same answer" : dAt >= Math.min(ga.length, gb.length) ? `same tokens up to step ${dAt}, then one run stops`
      : `answers part at step ${dAt}`;
    const table = h("div", { class: "cv-cmp-answers" });
    const T = Math.max(ga.length, gb.length);
    const nums = h("div", { class: "cv-cmp-stepnums" }, h("span", { class: "cv-cmp-rowlabel", text: "step" }));
    for (let s = 0; s < T; s++) nums.append(h("span", { text: s % 5 === 0 || s === dAt ? String(s) : "" }));
    table.append(nums);
    for (const [side, toks, label] of [["a", ga, la], ["b", gb, lb]] as [Side, string[], string][]) {
      const row = h("div", { class: "cv-cmp-gen", "data-side": side }, h("span", { class: "cv-cmp-rowlabel", text: label }));
      genSpans[side] = toks.map((t, i) => {
        const span = h("span", { class: `cv-tok cv-gen${dAt !== null && i >= dAt ? " cv-diverged" : ""}${i === dAt ? " cv-diverge-start" : ""}`,
          "data-step": String(i), text: shownTok(t) });
        row.append(span);
        return span;
      });
      table.append(row);
    }
    curves = h("canvas", { class: "cv-cmp-curves" });
    const key = (side: Side, label: string) => h("span", { class: "cv-cmp-key", "data-side": side },
      h("span", { class: `cv-cmp-swatch cv-cmp-swatch-${side}`, style: `border-top-color: ${SIDE_COLOR[side]}` }), label);
    const curveLegend = h("div", { class: "cv-legend cv-cmp-curve-legend" }, key("a", `${la} (solid)`), key("b", `${lb} (dashed)`));
    if (dAt !== null) curveLegend.append(h("span", { class: "cv-cmp-key", text: `┊ part at step ${dAt}` }));
    root.append(h("div", { class: "cv-cmp-section" },
      h("div", { class: "cv-header" }, h("span", { class: "cv-title", text: "Answers" }), metricSel, tokenLegend,
        h("span", { class: "cv-muted cv-cmp-part", text: partText })),
      h("div", { class: "cv-cmp-answers-box" }, table), curveLegend, curves));

    // the difference heatmap (same shape) or the two per-layer profiles, and the ranked table
    statSel = h("select", { class: "cv-cmp-stat", "aria-label": "statistic" });
    for (const s of statChoices(m)) statSel.append(h("option", { value: s, text: statLabel(m, s).label }));
    heatInfo = h("span", { class: "cv-muted cv-cmp-heat-info" });
    heatBox = h("div", { class: "cv-cmp-diff", tabindex: "0" });
    const lower = h("div", { class: "cv-row cv-cmp-lower" });
    if (m.same_shape) {
      heat = h("canvas", { class: "cv-cmp-heat" });
      heatLegend = h("div", { class: "cv-legend cv-cmp-heat-legend" });
      heatBox.append(h("div", { class: "cv-header" }, h("span", { class: "cv-title", text: `Heads: ${lb} − ${la}` }), statSel, heatInfo),
        heat, heatLegend, tip);
    } else {
      profiles = h("canvas", { class: "cv-cmp-profiles" });
      const [La, Ha] = m.shape_a ?? [0, 0], [Lb, Hb] = m.shape_b ?? [0, 0];
      why = h("div", { class: "cv-muted cv-cmp-why", text: `different architectures (${la}: ${La} layers × ${Ha} heads, ${lb}: ${Lb} × ${Hb}): ` +
        "heads cannot be paired, so no head-by-head difference; these are the per-layer profiles (per-head statistics: mean over heads), " +
        "x = relative depth 0..1 since the depths differ" });
      heatBox.append(h("div", { class: "cv-header" }, h("span", { class: "cv-title", text: "Layers" }), statSel, heatInfo), why,
        h("div", { class: "cv-legend cv-cmp-curve-legend" }, key("a", `${la} (solid)`), key("b", `${lb} (dashed)`)), profiles);
    }
    lower.append(heatBox);

    const rows = diffRows(m);
    const tbody = h("tbody");
    rows.forEach((r, i) => {
      const tr = h("tr", { class: "cv-cmp-row", tabindex: "0", "data-rank": String(i), "data-stat": r.stat,
        "data-layer": r.layer === null ? "" : String(r.layer), "data-head": r.head === null ? "" : String(r.head),
        "data-a": String(r.a), "data-b": String(r.b), "data-delta": String(r.delta), title: `${r.text} · click to show it` },
      h("td", { class: "cv-num", text: String(i + 1) }), h("td", { class: "cv-cmp-text", text: r.text }),
      h("td", { class: "cv-num", text: fmt(r.a) }), h("td", { class: "cv-num", text: fmt(r.b) }), h("td", { class: "cv-num", text: signed(r.delta) }));
      tbody.append(tr);
      tableRows.push([tr, r]);
    });
    const tableEl = h("table", { class: "cv-cmp-table" },
      h("thead", {}, h("tr", {}, h("th", { text: "#" }), h("th", { text: "difference" }), h("th", { text: la }), h("th", { text: lb }),
        h("th", { text: `Δ (${lb} − ${la})` }))), tbody);
    const tableSection = h("div", { class: "cv-cmp-ranked" },
      h("div", { class: "cv-header" }, h("span", { class: "cv-title", text: "Largest differences" }),
        h("span", { class: "cv-muted", text: rows.length ? `${rows.length} ranked by |Δ| ÷ scale` : "none" })),
      h("div", { class: "cv-cmp-table-box" }, tableEl));
    lower.append(tableSection);
    root.append(lower);

    metricSel.addEventListener("change", () => setSel({ metric: metricSel!.value }));
    statSel.addEventListener("change", () => setSel({ stat: statSel!.value }));
    tbody.addEventListener("click", (ev) => pickRow(ev.target as HTMLElement));
    tbody.addEventListener("keydown", (ev) => {
      if (ev.key !== "Enter" && ev.key !== " ") return;
      pickRow(ev.target as HTMLElement);
      ev.preventDefault();
    });
    if (heat) wireHeat(heat);
    if (firstChanged) {
      const box = firstChanged.parentElement as HTMLElement;
      if (box.scrollHeight > box.clientHeight) box.scrollTop = Math.max(0, firstChanged.offsetTop - box.offsetTop - 20);
    }
    update();
    root.dataset.ready = "1";
  };

  const pickRow = (target: HTMLElement) => {
    const tr = target.closest?.("tr[data-rank]") as HTMLTableRowElement | null;
    if (!tr) return;
    const hit = tableRows.find(([t]) => t === tr);
    if (hit) setSel(rowTarget(hit[1], meta()));
  };

  /** Recolour and redraw for the selection (no DOM rebuilt). */
  const update = () => {
    const p = store.data;
    if (!p) return;
    const s = sel();
    root.dataset.metric = s.metric;
    root.dataset.stat = s.stat;
    root.dataset.layer = s.layer === null ? "" : String(s.layer);
    root.dataset.head = s.head === null ? "" : String(s.head);
    if (metricSel) metricSel.value = s.metric;
    if (statSel) statSel.value = s.stat;
    colourTokens(p, s);
    drawCurves();
    drawHeat();
    drawProfiles();
    for (const [tr, r] of tableRows) tr.classList.toggle("cv-selected", rowSelected(r, s, p.meta));
  };

  const colourTokens = (p: Payload, s: CompareSelection) => {
    const d = metricDef(s.metric);
    const dom = metricDomain(d); // fixed: one colour means one number in both runs
    const [la, lb] = labels();
    for (const side of ["a", "b"] as Side[]) {
      const v = values(p, `${side}_${d.key}`);
      const label = side === "a" ? la : lb;
      genSpans[side].forEach((span, i) => {
        const x = i < v.length ? v[i] : NaN;
        span.style.background = tokenColor(x, d, dom);
        span.title = `step ${i} · ${label}: ${JSON.stringify(span.textContent ?? "")} · ${d.label} ${fmt(x)} ${d.unit}`;
      });
    }
    if (tokenLegend) {
      const stops = [0, 0.25, 0.5, 0.75, 1].map((t) => css(interpolate(RAMP_ALARM, d.higherIsWorse ? t : 1 - t)));
      const ends = legendEnds(d);
      const scale = legendText(d);
      tokenLegend.title = `${scale}: ${d.basis}`;
      tokenLegend.dataset.scale = scale;
      tokenLegend.replaceChildren(h("span", { class: "cv-legend-lo", text: ends.lo }),
        h("span", { class: "cv-legend-bar", style: `background: linear-gradient(to right, ${stops.join(", ")})` }),
        h("span", { class: "cv-legend-hi", text: ends.hi }), h("span", { class: "cv-legend-unit", text: scale }));
    }
  };

  const drawCurves = () => {
    const p = store.data;
    if (!p || !curves) return;
    const d = metricDef(sel().metric);
    const va = values(p, `a_${d.key}`), vb = values(p, `b_${d.key}`);
    const T = Math.max(va.length, vb.length);
    curveG = curveLayout(T, widthOf(root), 110);
    const ctx = sizeCanvas(curves, curveG.width, curveG.height);
    curves.dataset.metric = d.key;
    curves.dataset.steps = `${va.length},${vb.length}`;
    if (!ctx) return;
    const dom = metricDomain(d);
    const fg = themeColor(root, "--jp-ui-font-color2", "#666");
    ctx.clearRect(0, 0, curveG.width, curveG.height);
    ctx.font = "10px sans-serif";
    ctx.fillStyle = fg;
    ctx.textAlign = "right";
    const ends = legendEnds(d);
    ctx.fillText(ends.hi, curveG.padL - 4, curveG.padT + 8);
    ctx.fillText(ends.lo, curveG.padL - 4, curveG.height - curveG.padB);
    if (T === 0) return;
    ctx.textAlign = "left";
    ctx.fillText(`step 0 · ${d.label}, ${d.unit}`, curveG.padL, curveG.height - 3);
    ctx.textAlign = "right";
    ctx.fillText(`${T - 1}`, curveG.width - curveG.padR, curveG.height - 3);
    const dAt = p.meta.diverged_at;
    if (typeof dAt === "number" && dAt < T) {
      const x = curveX(curveG, dAt);
      ctx.strokeStyle = fg;
      ctx.lineWidth = 1;
      ctx.setLineDash([2, 3]);
      ctx.beginPath(); ctx.moveTo(x, curveG.padT); ctx.lineTo(x, curveG.height - curveG.padB); ctx.stroke();
      ctx.setLineDash([]);
    }
    for (const [side, v] of [["a", va], ["b", vb]] as [Side, Float32Array][]) {
      ctx.strokeStyle = SIDE_COLOR[side];
      ctx.lineWidth = side === "a" ? 2 : 1.75;
      ctx.setLineDash(SIDE_DASH[side]);
      ctx.beginPath();
      let pen = false;
      for (let s = 0; s < v.length; s++) {
        if (!Number.isFinite(v[s])) { pen = false; continue; }
        const x = curveX(curveG, s), y = curveY(curveG, v[s], dom);
        if (pen) ctx.lineTo(x, y); else { ctx.moveTo(x, y); pen = true; }
      }
      ctx.stroke();
      if (v.length === 1 && Number.isFinite(v[0])) { // one step: a dot, not an invisible line
        ctx.fillStyle = SIDE_COLOR[side];
        ctx.beginPath(); ctx.arc(curveX(curveG, 0), curveY(curveG, v[0], dom), 3, 0, 2 * Math.PI); ctx.fill();
      }
    }
    ctx.setLineDash([]);
  };

  const drawHeat = () => {
    const p = store.data;
    if (!p || !heat || !heatBox) return;
    const s = sel();
    const d = diffData(p, s.stat);
    shownDiff = d;
    const m = p.meta;
    const { label } = statLabel(m, s.stat);
    if (!d) {
      root.dataset.cells = "0";
      heatBox.dataset.cells = "0";
      if (heatInfo) heatInfo.textContent = `no difference matrix for ${label}`;
      sizeCanvas(heat, 1, 1);
      return;
    }
    const { L, H, scale } = d;
    g = heatLayout(L, H, Math.min(widthOf(heatBox, 420), 520));
    const ctx = sizeCanvas(heat, g.width, g.height);
    root.dataset.cells = String(L * H);
    heatBox.dataset.cells = String(L * H);
    heatBox.dataset.stat = s.stat;
    let defined = 0, beyond = 0;
    for (let i = 0; i < L * H; i++) { const v = d.values[i]; if (Number.isFinite(v)) { defined++; if (Math.abs(v) > scale.limit) beyond++; } }
    heatBox.dataset.beyond = String(beyond);
    if (heatInfo) heatInfo.textContent = `${L} layers × ${H} heads${beyond ? ` · ${beyond} beyond ±${fmt(scale.limit)}` : ""}` +
      (defined < L * H ? ` · ${L * H - defined} undefined (grey)` : "");
    const fg = themeColor(heatBox, "--jp-ui-font-color1", "#222");
    if (ctx) {
      ctx.clearRect(0, 0, g.width, g.height);
      ctx.font = "9px sans-serif";
      ctx.fillStyle = fg;
      ctx.textAlign = "center";
      for (let hh = 0; hh < H; hh++) ctx.fillText(`h${hh}`, g.left + (hh + 0.5) * g.cw, g.top - 4);
      ctx.textAlign = "right";
      const every = Math.max(1, Math.ceil(10 / g.ch));
      for (let l = 0; l < L; l += every) ctx.fillText(`L${l}`, g.left - 3, g.top + (l + 0.8) * g.ch);
      for (let l = 0; l < L; l++) for (let hh = 0; hh < H; hh++) {
        ctx.fillStyle = zColor(d.values[l * H + hh], scale.limit);
        ctx.fillRect(g.left + hh * g.cw, g.top + l * g.ch, g.cw - 1, g.ch - 1);
      }
      if (s.layer !== null && s.layer < L) {
        ctx.strokeStyle = fg;
        ctx.lineWidth = 2;
        if (s.head !== null && s.head < H) ctx.strokeRect(g.left + s.head * g.cw - 1, g.top + s.layer * g.ch - 1, g.cw + 1, g.ch + 1);
        else ctx.strokeRect(g.left - 1, g.top + s.layer * g.ch - 1, H * g.cw + 1, g.ch + 1);
      }
    }
    if (heatLegend) {
      const text = diffLegendText(scale, labels());
      const [la, lb] = labels();
      const full = `${label}: ${text} · blue: lower in ${lb}, red: higher in ${lb}, white: the same · ${scale.basis}`;
      heatLegend.title = full;
      heatLegend.dataset.scale = text;
      heatLegend.dataset.limit = String(scale.limit);
      heatLegend.replaceChildren(
        h("span", { class: "cv-legend-lo", text: `−${fmt(scale.limit)}` }),
        h("span", { class: "cv-legend-bar", style: `background: linear-gradient(to right, ${[0, 0.25, 0.5, 0.75, 1].map((t) => css(interpolate(RAMP_DIVERGE, t))).join(", ")})` }),
        h("span", { class: "cv-legend-hi", text: `+${fmt(scale.limit)}` }),
        h("span", { class: "cv-legend-unit", title: full, text: `${text} · blue: lower in ${lb} than ${la}` }));
    }
  };

  const drawProfiles = () => {
    const p = store.data;
    if (!p || !profiles || !heatBox) return;
    const s = sel();
    const pa = values(p, `prof_a_${s.stat}`), pb = values(p, `prof_b_${s.stat}`);
    const { label, unit } = statLabel(p.meta, s.stat);
    const dom = profileDomain(s.stat, pa, pb);
    root.dataset.cells = "0";
    heatBox.dataset.stat = s.stat;
    profiles.dataset.stat = s.stat;
    profiles.dataset.layers = `${pa.length},${pb.length}`;
    if (heatInfo) heatInfo.textContent = `${label}${unit ? `, ${unit}` : ""} per layer · y: ${dom.fixed ? "the statistic's fixed scale" : "the range of both profiles"}`;
    const width = Math.min(widthOf(heatBox, 420), 520), height = 150;
    const padL = 44, padR = 10, padT = 8, padB = 18;
    const ctx = sizeCanvas(profiles, width, height);
    if (!ctx) return;
    const fg = themeColor(heatBox, "--jp-ui-font-color2", "#666");
    ctx.clearRect(0, 0, width, height);
    ctx.font = "10px sans-serif";
    ctx.fillStyle = fg;
    ctx.textAlign = "right";
    ctx.fillText(fmt(dom.hi), padL - 4, padT + 8);
    ctx.fillText(fmt(dom.lo), padL - 4, height - padB);
    ctx.textAlign = "left";
    ctx.fillText("depth 0 (first layer)", padL, height - 4);
    ctx.textAlign = "right";
    ctx.fillText("1 (last)", width - padR, height - 4);
    const X = (t: number) => padL + t * (width - padL - padR);
    const Y = (v: number) => padT + (1 - Math.min(1, Math.max(0, (v - dom.lo) / (dom.hi - dom.lo)))) * (height - padT - padB);
    for (const [side, v] of [["a", pa], ["b", pb]] as [Side, Float32Array][]) {
      ctx.strokeStyle = SIDE_COLOR[side];
      ctx.fillStyle = SIDE_COLOR[side];
      ctx.lineWidth = side === "a" ? 2 : 1.75;
      ctx.setLineDash(SIDE_DASH[side]);
      ctx.beginPath();
      let pen = false;
      for (let l = 0; l < v.length; l++) {
        if (!Number.isFinite(v[l])) { pen = false; continue; }
        const x = X(relDepth(l, v.length)), y = Y(v[l]);
        if (pen) ctx.lineTo(x, y); else { ctx.moveTo(x, y); pen = true; }
      }
      ctx.stroke();
      ctx.setLineDash([]);
      for (let l = 0; l < v.length; l++) if (Number.isFinite(v[l])) {
        ctx.beginPath(); ctx.arc(X(relDepth(l, v.length)), Y(v[l]), 2, 0, 2 * Math.PI); ctx.fill();
      }
    }
  };

  const wireHeat = (canvas: HTMLCanvasElement) => {
    const at = (ev: MouseEvent) => {
      const r = canvas.getBoundingClientRect();
      return hitCell(g, ev.clientX - r.left, ev.clientY - r.top);
    };
    canvas.addEventListener("click", (ev) => {
      const hit = at(ev);
      if (hit) setSel(hit);
    });
    canvas.addEventListener("mousemove", (ev) => {
      const hit = at(ev);
      if (!hit || hit.layer === null || hit.head === null || !shownDiff || !heatBox) { tip.hidden = true; return; }
      tip.textContent = diffTip(shownDiff, hit.layer, hit.head);
      const rb = heatBox.getBoundingClientRect(), cb = canvas.getBoundingClientRect();
      tip.style.left = `${cb.left - rb.left + g.left + (hit.head + 1) * g.cw + 4}px`;
      tip.style.top = `${cb.top - rb.top + g.top + hit.layer * g.ch}px`;
      tip.hidden = false;
    });
    canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
    heatBox?.addEventListener("keydown", (ev) => {
      if (ev.target instanceof HTMLSelectElement || !shownDiff) return;
      const moves: Record<string, [number, number]> = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
      const mv = moves[ev.key];
      if (!mv) return;
      const s = sel();
      const { L, H } = shownDiff;
      setSel({ layer: Math.min(L - 1, Math.max(0, (s.layer ?? 0) + mv[0])), head: Math.min(H - 1, Math.max(0, (s.head ?? 0) + mv[1])) });
      ev.preventDefault();
    });
  };

  const redrawCanvases = () => { drawCurves(); drawHeat(); drawProfiles(); };
  store.on(["data"], build);
  store.on(["selection"], update);
  const stopResize = observeResize(root, redrawCanvases);
  let themeDraws = 0;
  const stopTheme = observeTheme(() => { redrawCanvases(); root.dataset.themeDraws = String(++themeDraws); });
  build();
  return () => { stopResize(); stopTheme(); root.remove(); };
}

/** The compare view's CSS (appended to the shared CSS in render.ts). */
export const COMPARE_CSS = `
.cv-compare { display: flex; flex-direction: column; gap: 10px; position: relative; }
.cv-compare:focus { outline: none; }
.cv-cmp-header { display: flex; flex-wrap: wrap; gap: 2px 10px; align-items: baseline; }
.cv-cmp-labels { font-weight: 600; font-size: 14px; }
.cv-cmp-side { font-weight: 700; }
.cv-cmp-labels .cv-cmp-side[data-side=a], .cv-cmp-key[data-side=a] { color: rgb(25, 118, 210); }
.cv-cmp-labels .cv-cmp-side[data-side=b], .cv-cmp-key[data-side=b] { color: rgb(230, 97, 0); }
.cv-cmp-summary { flex: 1 1 100%; }
.cv-cmp-scale { flex: 1 1 100%; font-size: 11px; }
.cv-cmp-verdicts { display: flex; flex-wrap: wrap; gap: 8px 14px; }
.cv-cmp-verdict { flex: 1 1 280px; min-width: 0; display: flex; flex-direction: column; gap: 3px; padding: 4px 8px;
  border: 1px solid var(--jp-border-color2, #ddd); border-left-width: 4px; border-radius: 3px; }
.cv-cmp-verdict[data-color=green] { border-left-color: var(--jp-success-color1, #2e7d32); }
.cv-cmp-verdict[data-color=yellow] { border-left-color: var(--jp-warn-color1, #f9a825); }
.cv-cmp-verdict[data-color=red] { border-left-color: var(--jp-error-color1, #d32f2f); }
.cv-cmp-verdict-head { display: flex; gap: 6px; align-items: center; font-weight: 600; }
.cv-cmp-verdict .cv-blame-run { font-size: 12px; }
.cv-cmp-prompts { display: flex; flex-direction: column; gap: 4px; }
.cv-cmp-prompt { font-family: var(--jp-code-font-family, monospace); font-size: var(--jp-code-font-size, 13px); white-space: pre-wrap;
  word-break: break-word; line-height: 1.9; max-height: 150px; overflow: auto; position: relative; }
.cv-cmp-rowlabel { font-family: var(--jp-ui-font-family, system-ui, sans-serif); font-weight: 700; font-size: 12px; }
.cv-compare .cv-tok { cursor: default; }
.cv-compare .cv-tok.cv-changed { background: rgba(230, 97, 0, 0.25); text-decoration: underline; text-decoration-thickness: 2px;
  text-decoration-color: rgb(230, 97, 0); text-underline-offset: 3px; outline: 1px dashed rgb(230, 97, 0); }
.cv-cmp-answers-box { overflow-x: auto; max-width: 100%; border: 1px solid var(--jp-border-color2, #ddd); border-radius: 3px; }
.cv-cmp-answers { display: table; border-collapse: separate; border-spacing: 1px 3px; font-family: var(--jp-code-font-family, monospace);
  font-size: var(--jp-code-font-size, 13px); }
.cv-cmp-gen, .cv-cmp-stepnums { display: table-row; }
.cv-cmp-gen > *, .cv-cmp-stepnums > * { display: table-cell; white-space: pre; padding: 1px 2px; vertical-align: middle; }
.cv-cmp-answers .cv-cmp-rowlabel { position: sticky; left: 0; z-index: 1; background: var(--jp-layout-color1, #fff); padding-right: 6px; }
.cv-cmp-stepnums > * { font-size: 9px; color: var(--jp-ui-font-color3, #999); font-family: var(--jp-ui-font-family, sans-serif); }
.cv-cmp-gen .cv-tok.cv-diverged { box-shadow: inset 0 -3px 0 var(--jp-error-color1, #d32f2f); }
.cv-cmp-gen .cv-tok.cv-diverge-start { border-left: 2px dotted var(--jp-ui-font-color1, #222); }
.cv-cmp-part { font-size: 12px; }
.cv-cmp-curve-legend { margin-top: 4px; }
.cv-cmp-key { display: inline-flex; gap: 4px; align-items: center; font-weight: 600; }
.cv-cmp-swatch { display: inline-block; width: 24px; height: 0; border-top: 2px solid; }
.cv-cmp-swatch-b { border-top-style: dashed; }
.cv-cmp-curves, .cv-cmp-heat, .cv-cmp-profiles { display: block; }
.cv-cmp-heat { cursor: pointer; }
.cv-cmp-diff { position: relative; }
.cv-cmp-diff:focus { outline: none; }
.cv-cmp-heat-legend { gap: 4px; cursor: help; }
.cv-cmp-heat-legend .cv-legend-bar { width: 72px; }
.cv-cmp-why { font-size: 12px; margin-bottom: 4px; }
.cv-cmp-table-box { max-height: 446px; overflow: auto; border: 1px solid var(--jp-border-color2, #ddd); border-radius: 3px; }
.cv-cmp-table { border-collapse: collapse; width: 100%; font-size: 12px; }
.cv-cmp-table th { position: sticky; top: 0; z-index: 1; background: var(--jp-layout-color2, #eee); text-align: left; padding: 3px 6px;
  white-space: nowrap; border-bottom: 1px solid var(--jp-border-color1, #bbb); }
.cv-cmp-table td { padding: 2px 6px; height: 17px; border-bottom: 1px solid var(--jp-border-color3, #eee); white-space: nowrap; }
.cv-cmp-table .cv-num { text-align: right; font-variant-numeric: tabular-nums; }
.cv-cmp-text { max-width: 260px; overflow: hidden; text-overflow: ellipsis; }
.cv-cmp-row { cursor: pointer; }
.cv-cmp-row:hover { background: var(--jp-layout-color2, #f3f3f3); }
.cv-cmp-row.cv-selected { background: rgba(33, 150, 243, 0.28); outline: 2px solid var(--jp-brand-color1, #1976d2); outline-offset: -2px; }
`;
