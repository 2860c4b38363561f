/** Token timeline: prompt + generated tokens coloured by a metric, metric curve, top-k on hover. */
import { h, observeResize, observeTheme, sizeCanvas, themeColor, widthOf } from "../dom";
import type { Payload } from "../payload";
import { css, fmt, interpolate, legendEnds, legendText, METRICS, metricDef, metricDomain, RAMP_ALARM, showToken, tokenColor, type Domain,
  type MetricDef } from "../scales";
import { INTERRUPTED_PHASE, PROMPT_PHASE, type Progress, type Store } from "../store";

/** Values of a metric for the generated steps and the prompt tokens (prompt: surprisal only). */
export function metricValues(p: Payload, key: string): { gen: Float32Array; prompt: Float32Array } {
  const P = p.strings.prompt_tokens?.length ?? 0;
  const T = p.strings.generated_tokens?.length ?? 0;
  const src = p.arrays[key]?.data;
  const gen = new Float32Array(T).fill(NaN);
  if (src) gen.set(src.subarray(0, T) as ArrayLike<number>);
  const prompt = new Float32Array(P).fill(NaN);
  const ps = p.arrays.prompt_surprisal?.data;
  // prompt surprisal [P-1] belongs to tokens 1..P-1 (token 0 has no context)
  if (key === "surprisal" && ps) prompt.set((ps as Float32Array).subarray(0, Math.max(0, P - 1)), 1);
  return { gen, prompt };
}

export interface Alternative { text: string; prob: number; chosen: boolean }

/** The top-k alternatives of one step, most likely first (pure). */
export function topKRows(p: Payload, step: number): Alternative[] {
  const ids = p.arrays.top_k_ids, probs = p.arrays.top_k_probs;
  if (!ids || !probs) return [];
  const K = ids.shape[1];
  const texts = p.strings.top_k_tokens;
  const chosenId = p.arrays.generated_ids?.data[step];
  const out: Alternative[] = [];
  for (let k = 0; k < K; k++) {
    const id = ids.data[step * K + k];
    out.push({ text: texts ? texts[step * K + k] : `#${id}`, prob: probs.data[step * K + k], chosen: id === chosenId });
  }
  return out.sort((a, b) => b.prob - a.prob);
}

export interface CurveLayout { width: number; height: number; padL: number; padR: number; padT: number; padB: number; n: number }

export function curveLayout(n: number, width: number, height = 90): CurveLayout {
  return { width, height, padL: 44, padR: 10, padT: 8, padB: 16, n };
}

/** x (CSS px) of a step in the curve. */
export function curveX(L: CurveLayout, step: number): number {
  const w = L.width - L.padL - L.padR;
  return L.padL + (L.n <= 1 ? w / 2 : (step / (L.n - 1)) * w);
}

/** The step nearest to x, or null outside the plot. */
export function stepAt(L: CurveLayout, x: number): number | null {
  if (L.n === 0 || x < L.padL - 6 || x > L.width - L.padR + 6) return null;
  if (L.n === 1) return 0;
  const s = Math.round(((x - L.padL) / (L.width - L.padL - L.padR)) * (L.n - 1));
  return Math.min(L.n - 1, Math.max(0, s));
}

export function curveY(L: CurveLayout, v: number, d: Domain): number {
  const t = d.log ? (Math.log(Math.max(v, d.lo)) - Math.log(d.lo)) / (Math.log(d.hi) - Math.log(d.lo)) : (v - d.lo) / (d.hi - d.lo);
  return L.padT + (1 - Math.min(1, Math.max(0, t))) * (L.height - L.padT - L.padB);
}

/** The live progress line (pure): while the prompt pass runs (a long prompt's slow phase) the blocks
 * done of all blocks with attention, then the tokens generated of the most asked for. */
export function progressText(pr: Progress): { label: string; fraction: number } {
  if (pr.phase === PROMPT_PHASE) {
    if (typeof pr.layers !== "number" || pr.layers <= 0) return { label: `${PROMPT_PHASE}…`, fraction: 0 };
    const done = Math.min(pr.layer ?? 0, pr.layers);
    return { label: `${PROMPT_PHASE}: layer ${done}/${pr.layers}`, fraction: done / pr.layers };
  }
  const fraction = pr.total > 0 ? Math.min(1, pr.step / pr.total) : 0;
  if (pr.phase === INTERRUPTED_PHASE) {
    return { label: `interrupted by the kernel at ${pr.step}/${pr.total}: no trace, the model is as it was ` +
      "(Stop in corevital.explore, or analyze(stop=…), keeps a partial trace)", fraction };
  }
  return { label: pr.phase ? `${pr.phase} ${pr.step}/${pr.total}` : `${pr.step}/${pr.total}`, fraction };
}

export function mountTimeline(el: HTMLElement, store: Store): () => void {
  const root = h("div", { class: "cv-timeline", tabindex: "0" });
  const select = h("select", { class: "cv-metric", "aria-label": "metric" });
  for (const m of METRICS) select.append(h("option", { value: m.key, text: m.label }));
  const legend = h("div", { class: "cv-legend" });
  const progress = h("div", { class: "cv-progress", hidden: "" }, h("div", { class: "cv-progress-bar" }), h("span", { class: "cv-progress-text" }));
  const header = h("div", { class: "cv-header" }, h("span", { class: "cv-title", text: "Tokens" }), select, legend, progress);
  const text = h("div", { class: "cv-tokens" });
  const canvas = h("canvas", { class: "cv-curve" });
  const tip = h("div", { class: "cv-tip", hidden: "" });
  root.append(header, text, canvas, tip);
  el.append(root);

  let promptSpans: HTMLElement[] = [];
  let genSpans: HTMLElement[] = [];
  let layout = curveLayout(0, 600);

  const def = (): MetricDef => metricDef(store.sel.metric);

  const buildText = () => {
    const p = store.data;
    text.replaceChildren();
    const frag = document.createDocumentFragment();
    if (!p) {
      genSpans = store.liveTokens.map((t, i) => h("span", { class: "cv-tok cv-gen cv-live", "data-step": String(i), text: showToken(t) }));
      promptSpans = [];
      genSpans.forEach((s) => frag.append(s));
      text.append(frag);
      return;
    }
    promptSpans = (p.strings.prompt_tokens ?? []).map((t, i) => h("span", { class: "cv-tok cv-prompt", "data-token": String(i), text: showToken(t) }));
    genSpans = (p.strings.generated_tokens ?? []).map((t, i) => h("span", { class: "cv-tok cv-gen", "data-step": String(i), text: showToken(t) }));
    promptSpans.forEach((s) => frag.append(s));
    const sep = h("span", { class: "cv-sep", text: " ▸ " });
    frag.append(sep);
    genSpans.forEach((s) => frag.append(s));
    text.append(frag);
    // long prompts: start scrolled to where generation begins
    if (text.scrollHeight > text.clientHeight) text.scrollTop = Math.max(0, sep.offsetTop - 2 * sep.offsetHeight);
  };

  const colour = () => {
    const p = store.data;
    const d = def();
    select.value = d.key;
    root.dataset.metric = d.key;
    if (!p) { legend.replaceChildren(); return; }
    const vals = metricValues(p, d.key);
    // the metric's fixed domain (scales.ts), not this trace's min..max: a colour means the same number in every trace
    const dom = metricDomain(d);
    for (let i = 0; i < genSpans.length; i++) genSpans[i].style.background = tokenColor(vals.gen[i], d, dom);
    for (let i = 0; i < promptSpans.length; i++) promptSpans[i].style.background = tokenColor(vals.prompt[i], d, dom);
    const stops = [0, 0.25, 0.5, 0.75, 1].map((t) => css(interpolate(RAMP_ALARM, d.higherIsWorse ? t : 1 - t)));
    const ends = legendEnds(d);
    const scale = legendText(d);
    legend.title = `${scale}: ${d.basis}`;
    legend.dataset.scale = scale;
    legend.replaceChildren(
      h("span", { class: "cv-legend-lo", text: ends.lo }),
      h("span", { class: "cv-legend-bar", style: `background: linear-gradient(to right, ${stops.join(", ")})` }),
      h("span", { class: "cv-legend-hi", text: ends.hi }),
      h("span", { class: "cv-legend-unit", text: `${scale}${d.key === "surprisal" ? "" : " · prompt uncoloured"}` }),
    );
    drawCurve();
  };

  const drawCurve = () => {
    const p = store.data;
    const T = p ? (p.strings.generated_tokens?.length ?? 0) : 0;
    layout = curveLayout(T, widthOf(root));
    const ctx = sizeCanvas(canvas, layout.width, layout.height);
    if (!ctx || !p || T === 0) return;
    const d = def();
    const vals = metricValues(p, d.key).gen;
    const dom = metricDomain(d); // fixed: the curve's height means the same number in every trace
    const fg = themeColor(root, "--jp-ui-font-color2", "#666");
    ctx.clearRect(0, 0, layout.width, layout.height);
    ctx.font = "10px sans-serif";
    ctx.fillStyle = fg;
    ctx.textAlign = "right";
    const ends = legendEnds(d);
    ctx.fillText(ends.hi, layout.padL - 4, layout.padT + 8);
    ctx.fillText(ends.lo, layout.padL - 4, layout.height - layout.padB);
    ctx.textAlign = "left";
    ctx.fillText(`step 0`, layout.padL, layout.height - 3);
    ctx.textAlign = "right";
    ctx.fillText(`${T - 1}`, layout.width - layout.padR, layout.height - 3);
    const thr = store.data?.meta.thresholds?.high_entropy_bits;
    if (d.key === "entropy" && typeof thr === "number" && thr < dom.hi) {
      const y = curveY(layout, thr, dom);
      ctx.strokeStyle = "rgba(240, 59, 32, 0.6)";
      ctx.setLineDash([4, 3]);
      ctx.beginPath(); ctx.moveTo(layout.padL, y); ctx.lineTo(layout.width - layout.padR, y); ctx.stroke();
      ctx.setLineDash([]);
    }
    ctx.strokeStyle = themeColor(root, "--jp-brand-color1", "#1976d2");
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    let pen = false;
    for (let s = 0; s < T; s++) {
      const v = vals[s];
      if (!Number.isFinite(v)) { pen = false; continue; }
      const x = curveX(layout, s), y = curveY(layout, v, dom);
      if (pen) ctx.lineTo(x, y); else { ctx.moveTo(x, y); pen = true; }
    }
    ctx.stroke();
    const step = store.sel.step;
    if (step !== null && step < T) {
      const x = curveX(layout, step);
      ctx.strokeStyle = fg;
      ctx.beginPath(); ctx.moveTo(x, layout.padT); ctx.lineTo(x, layout.height - layout.padB); ctx.stroke();
      if (Number.isFinite(vals[step])) {
        ctx.fillStyle = ctx.strokeStyle;
        ctx.beginPath(); ctx.arc(x, curveY(layout, vals[step], dom), 3, 0, 2 * Math.PI); ctx.fill();
      }
    }
  };

  let marked: HTMLElement[] = [];
  const markSelection = () => {
    for (const m of marked) m.classList.remove("cv-selected");
    marked = [];
    const { step, token } = store.sel;
    if (step !== null && genSpans[step]) marked.push(genSpans[step]);
    if (token !== null && promptSpans[token]) marked.push(promptSpans[token]);
    for (const m of marked) m.classList.add("cv-selected");
    root.dataset.step = step === null ? "" : String(step);
    drawCurve();
  };

  const showProgress = () => {
    const pr = store.progress;
    const live = pr && !pr.done;
    progress.hidden = !live;
    if (!pr) return;
    const text = progressText(pr);
    (progress.firstChild as HTMLElement).style.width = `${(100 * text.fraction).toFixed(1)}%`;
    (progress.lastChild as HTMLElement).textContent = text.label;
    root.dataset.phase = pr.phase ?? "";
    if ((pr.phase === "failed" || pr.phase === INTERRUPTED_PHASE) && !store.data) { progress.hidden = false; progress.classList.add("cv-failed"); }
    root.dataset.progress = `${pr.step}/${pr.total}`;
  };

  select.addEventListener("change", () => store.select({ metric: select.value }));
  text.addEventListener("click", (ev) => {
    const t = (ev.target as HTMLElement).closest?.(".cv-tok") as HTMLElement | null;
    if (!t || !store.data) return;
    if (t.dataset.step !== undefined) store.select({ step: Number(t.dataset.step) });
    else if (t.dataset.token !== undefined) store.select({ token: Number(t.dataset.token) });
  });
  text.addEventListener("mouseover", (ev) => {
    const t = (ev.target as HTMLElement).closest?.(".cv-gen") as HTMLElement | null;
    const p = store.data;
    if (!t || !p || t.dataset.step === undefined) { tip.hidden = true; return; }
    const step = Number(t.dataset.step);
    const rows = topKRows(p, step);
    const d = def();
    const v = p.arrays[d.key]?.data[step];
    tip.replaceChildren(
      h("div", { class: "cv-tip-title", text: `step ${step} · ${d.label} ${fmt(v ?? NaN)} ${d.unit}` }),
      ...rows.map((r) => h("div", { class: `cv-alt${r.chosen ? " cv-chosen" : ""}` },
        h("span", { class: "cv-alt-text", text: JSON.stringify(r.text) }),
        h("span", { class: "cv-alt-bar", style: `width:${(60 * r.prob).toFixed(1)}px` }),
        h("span", { class: "cv-alt-p", text: fmt(r.prob) }))),
    );
    const rb = root.getBoundingClientRect(), tb = t.getBoundingClientRect();
    tip.style.left = `${Math.max(0, tb.left - rb.left)}px`;
    tip.style.top = `${tb.bottom - rb.top + 4}px`;
    tip.hidden = false;
  });
  text.addEventListener("mouseleave", () => { tip.hidden = true; });
  canvas.addEventListener("click", (ev) => {
    const r = canvas.getBoundingClientRect();
    const s = stepAt(layout, ev.clientX - r.left);
    if (s !== null) store.select({ step: s });
  });
  root.addEventListener("keydown", (ev) => {
    if (ev.key !== "ArrowLeft" && ev.key !== "ArrowRight") return;
    if (ev.target instanceof HTMLSelectElement) return;
    const T = genSpans.length;
    if (!T) return;
    const cur = store.sel.step ?? -1;
    const next = Math.min(T - 1, Math.max(0, cur + (ev.key === "ArrowRight" ? 1 : -1)));
    store.select({ step: next });
    ev.preventDefault();
  });

  const full = () => { buildText(); colour(); markSelection(); showProgress(); };
  store.on(["data"], full);
  store.on(["live_tokens"], () => { if (!store.data) buildText(); });
  store.on(["progress"], showProgress);
  store.on(["selection"], () => { if (select.value !== store.sel.metric || root.dataset.metric !== store.sel.metric) colour(); markSelection(); });
  let scrolledToGen = false;
  const stopResize = observeResize(root, () => {
    drawCurve();
    const sep = text.querySelector(".cv-sep") as HTMLElement | null;
    if (!scrolledToGen && sep && text.clientHeight > 0) {
      scrolledToGen = true;
      if (text.scrollHeight > text.clientHeight) text.scrollTop = Math.max(0, sep.offsetTop - 2 * sep.offsetHeight);
    }
  });
  // a light/dark switch repaints the curve (axis text and line use the theme's colours) at once
  let themeDraws = 0;
  const stopTheme = observeTheme(() => { drawCurve(); root.dataset.themeDraws = String(++themeDraws); });
  full();
  return () => { stopResize(); stopTheme(); root.remove(); };
}
