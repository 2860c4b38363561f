/** The compare view: two traces side by side (Python's compare_payload). */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { compareSelection, diffLegendText, diffTip, diffData, profileDomain, relDepth, rowTarget, diffRows, SIDE_COLOR, SIDE_DASH } from "../src/components/compare";
import { heatLayout } from "../src/components/heatmap";
import { decodePayload } from "../src/payload";
import { diffScale, DIFF_SCALES, metricDef, metricDomain, tokenColor, zColor } from "../src/scales";
import { encodePayload, f4, mountView, recordCanvas, unmountAll } from "./helpers";

const L = 2, H = 3;
const HEAD_STATS = ["step_entropy", "step_concentration", "prompt_entropy", "prompt_concentration", "prompt_sink", "prompt_log_basin"];
const LAYER_STATS = [...HEAD_STATS, "hidden_log_norm", "layer_transformation", "hidden_log_norm_step"];
const STATS: Record<string, { label: string; unit: string }> = {
  step_entropy: { label: "attention entropy while generating", unit: "bits" },
  step_concentration: { label: "attention concentration while generating", unit: "" },
  prompt_entropy: { label: "prompt attention entropy", unit: "bits" },
  prompt_concentration: { label: "prompt attention concentration", unit: "" },
  prompt_sink: { label: "attention to the first token", unit: "" },
  prompt_log_basin: { label: "log basin (middle of the prompt vs its ends)", unit: "" },
  hidden_log_norm: { label: "log hidden-state norm", unit: "" },
  layer_transformation: { label: "layer transformation", unit: "" },
  hidden_log_norm_step: { label: "log hidden-state norm increment over the layer before", unit: "" },
  entropy_mean: { label: "mean output entropy", unit: "bits" },
};
/** step_entropy b − a: one cell beyond the ±3 bit limit (clips), one undefined (a block without attention). */
const DIFF_STEP_ENTROPY = [0.5, -1.25, 4.5, 0, NaN, -2];
/** prompt_entropy b − a: the largest difference at layer 1, head 2. */
const DIFF_PROMPT_ENTROPY = [0.1, 0.2, -0.3, 0.4, 0.5, -1.8];

const DIFFERENCES = [
  { stat: "prompt_entropy", layer: 1, head: 2, a: 2.1, b: 0.3, delta: -1.8, scaled: 7.2, text: "layer 1 head 2: prompt attention entropy 2.1 → 0.3 bits (7.2 scales)" },
  { stat: "hidden_log_norm", layer: 0, head: null, a: 3.73, b: 3.85, delta: 0.12, scaled: 2.7, text: "layer 0: log hidden-state norm 3.73 → 3.85 (2.7 scales)" },
  { stat: "entropy_mean", layer: null, head: null, a: 0.8, b: 1.9, delta: 1.1, scaled: 1.5, text: "run: mean output entropy 0.8 → 1.9 bits (1.5 scales)" },
];

const VERDICTS = [
  { color: "green", sentence: "Nothing unusual for this model.", narrative: "Nothing unusual for this model.", blame: [] },
  { color: "yellow", sentence: "Unusual at layer 1.", narrative: "Unusual at layer 1. More.",
    blame: [{ layer: 1, severity: 3.2, text: "layer 1 (severity 3.2): prompt attention entropy low", reasons: [] }] },
];

/** A compare payload as compare_payload writes it: A's prompt "Why is sky blue" vs B's "Why is the sky red"
 * (B inserts " the" and changes the last token), answers that part at step 1. */
function comparePayload(meta: Record<string, any> = {}, arrays: Record<string, any> = {}): Uint8Array {
  const sameShape = meta.same_shape ?? true;
  const out: Record<string, any> = {
    a_prompt_tokens: ["Why", " is", " sky", " blue"],
    b_prompt_tokens: ["Why", " is", " the", " sky", " red"],
    a_generated_tokens: [" It", " scatters", "."],
    b_generated_tokens: [" It", " is", " red", "."],
    a_changed: { dtype: "u1", shape: [4], values: [0, 0, 0, 1] },
    b_changed: { dtype: "u1", shape: [5], values: [0, 0, 1, 0, 1] },
  };
  const metrics: Record<string, [number[], number[]]> = {
    entropy: [[0.5, 2, 4.5], [0.5, 6, 1, 0.2]], surprisal: [[0.1, 3, 1], [0.1, 9, 2, 0.3]],
    top_k_margin: [[0.9, 0.2, 0.5], [0.9, 0.1, 0.7, 0.95]], voter_agreement: [[1, 0.8, 0.9], [1, 0.5, 0.9, 1]],
    perplexity: [[1.41, 4, 22.6], [1.41, 64, 2, 1.15]], max_prob: [[0.95, 0.4, 0.6], [0.95, 0.3, 0.8, 0.97]],
  };
  for (const [k, [a, b]] of Object.entries(metrics)) { out[`a_${k}`] = f4([a.length], a); out[`b_${k}`] = f4([b.length], b); }
  if (sameShape) {
    for (const s of HEAD_STATS) out[`diff_${s}`] = f4([L, H], s === "step_entropy" ? DIFF_STEP_ENTROPY : s === "prompt_entropy" ? DIFF_PROMPT_ENTROPY : [0, 0.1, 0.2, -0.1, -0.2, 0.3]);
  }
  const Lb = sameShape ? L : 4;
  for (const s of LAYER_STATS) {
    out[`prof_a_${s}`] = f4([L], [1, 2]);
    out[`prof_b_${s}`] = f4([Lb], Array.from({ length: Lb }, (_, i) => 1 + 0.5 * i));
  }
  return encodePayload({
    labels: ["A", "B"], same_prompt: false, same_shape: sameShape, diverged_at: 1,
    scale_source: "each statistic's robust spread over the layers and heads of both runs (no shared baseline)",
    shape_a: [L, H], shape_b: sameShape ? [L, H] : [4, 2], n_steps: [3, 4], n_prompt: [4, 5], model_names: ["tiny", "tiny"],
    verdicts: VERDICTS, differences: sameShape ? DIFFERENCES : DIFFERENCES.slice(2), head_stats: HEAD_STATS, layer_stats: LAYER_STATS,
    stats: STATS, summary: "compare A vs B: prompts differ at 1 / 2 tokens; answers part at step 1\n  1. layer 1 head 2: …", ...meta,
  }, { ...out, ...arrays });
}

const SEL = { stat: "step_entropy", layer: null, head: null, metric: "entropy" };
const mount = (meta: Record<string, any> = {}, selection: Record<string, any> = SEL) =>
  mountView("compare", comparePayload(meta), { selection: { ...selection } });

let rec: ReturnType<typeof recordCanvas>;
beforeEach(() => { document.body.replaceChildren(); rec = recordCanvas(); });
afterEach(() => { unmountAll(); rec.restore(); vi.restoreAllMocks(); });

const classes = (el: HTMLElement, sel: string, cls: string) => Array.from(el.querySelectorAll<HTMLElement>(sel)).map((t) => t.classList.contains(cls));

describe("compare view: prompts and answers", () => {
  it("marks exactly the prompt tokens a_changed / b_changed flag", () => {
    const { el } = mount();
    const root = el.querySelector(".cv-compare") as HTMLElement;
    expect(root.dataset.ready).toBe("1");
    expect(root.dataset.samePrompt).toBe("false");
    expect(root.dataset.sameShape).toBe("true");
    expect(classes(el, ".cv-cmp-prompt[data-side=a] .cv-tok", "cv-changed")).toEqual([false, false, false, true]);
    expect(classes(el, ".cv-cmp-prompt[data-side=b] .cv-tok", "cv-changed")).toEqual([false, false, true, false, true]);
    expect(el.querySelector(".cv-cmp-prompt[data-side=b] .cv-tok[data-token='2']")!.textContent).toBe(" the");
    expect((el.querySelector(".cv-cmp-prompt[data-side=b]") as HTMLElement).dataset.changed).toBe("2");
  });

  it("shows a shared prompt once, unmarked", () => {
    const { el } = mount({ same_prompt: true }, SEL);
    const prompts = el.querySelectorAll<HTMLElement>(".cv-cmp-prompt");
    expect(prompts).toHaveLength(1);
    expect(prompts[0].dataset.side).toBe("both");
    expect(prompts[0].textContent).toContain("same prompt (4 tokens)");
    expect(el.querySelectorAll(".cv-changed")).toHaveLength(0);
    expect((el.querySelector(".cv-compare") as HTMLElement).dataset.samePrompt).toBe("true");
  });

  it("aligns the answers step by step and marks the steps from diverged_at on", () => {
    const { el } = mount();
    expect((el.querySelector(".cv-compare") as HTMLElement).dataset.divergedAt).toBe("1");
    expect(classes(el, ".cv-cmp-gen[data-side=a] .cv-tok", "cv-diverged")).toEqual([false, true, true]);
    expect(classes(el, ".cv-cmp-gen[data-side=b] .cv-tok", "cv-diverged")).toEqual([false, true, true, true]);
    expect(Array.from(el.querySelectorAll<HTMLElement>(".cv-cmp-gen[data-side=b] .cv-tok")).map((t) => t.dataset.step)).toEqual(["0", "1", "2", "3"]);
    expect(el.querySelector(".cv-cmp-part")!.textContent).toBe("answers part at step 1");
  });

  it("colours both answers by the selected metric on its fixed domain and follows the metric select", () => {
    const { el, model } = mount();
    const bg = (side: string, i: number) => el.querySelectorAll<HTMLElement>(`.cv-cmp-gen[data-side=${side}] .cv-tok`)[i].style.background;
    const ent = metricDef("entropy");
    expect(bg("a", 2)).toBe(tokenColor(4.5, ent, metricDomain(ent)));
    expect(bg("b", 1)).toBe(tokenColor(6, ent, metricDomain(ent)));
    expect(bg("a", 0)).toBe(bg("b", 0)); // the same number, the same colour in both runs
    const select = el.querySelector(".cv-cmp-metric") as HTMLSelectElement;
    select.value = "max_prob";
    select.dispatchEvent(new Event("change"));
    expect(model.get("selection")).toMatchObject({ metric: "max_prob", stat: "step_entropy" });
    expect(model.saves).toBeGreaterThan(0);
    const mp = metricDef("max_prob");
    expect(bg("b", 2)).toBe(tokenColor(Math.fround(0.8), mp, metricDomain(mp)));
    expect(el.querySelector(".cv-cmp-token-legend .cv-legend-unit")!.textContent).toContain("max probability");
  });

  it("overlays A solid and B dashed in two colours, with a legend naming both", () => {
    const { el } = mount();
    const canvas = el.querySelector(".cv-cmp-curves") as HTMLCanvasElement;
    expect(canvas.dataset.steps).toBe("3,4");
    const strokes = rec.ops.filter((o) => o.canvas === canvas && o.op === "stroke").map((o) => o.strokeStyle);
    expect(strokes).toContain(SIDE_COLOR.a);
    expect(strokes).toContain(SIDE_COLOR.b);
    const dashes = rec.ops.filter((o) => o.canvas === canvas && o.op === "setLineDash").map((o) => JSON.stringify(o.args[0]));
    expect(dashes).toContain(JSON.stringify(SIDE_DASH.b));
    expect(SIDE_DASH.a).toEqual([]);
    const keys = Array.from(el.querySelectorAll<HTMLElement>(".cv-cmp-curve-legend .cv-cmp-key[data-side]")).map((k) => k.textContent);
    expect(keys).toEqual(["A (solid)", "B (dashed)"]);
    expect(SIDE_COLOR.a).not.toBe(SIDE_COLOR.b);
  });

  it("shows both verdicts side by side with their lights, sentences and blame", () => {
    const { el } = mount();
    const a = el.querySelector(".cv-cmp-verdict[data-side=a]") as HTMLElement;
    const b = el.querySelector(".cv-cmp-verdict[data-side=b]") as HTMLElement;
    expect(a.dataset.color).toBe("green");
    expect(b.dataset.color).toBe("yellow");
    expect(b.querySelector(".cv-light.cv-yellow")).not.toBeNull();
    expect(b.textContent).toContain("Unusual at layer 1.");
    expect(b.textContent).toContain("layer 1 (severity 3.2): prompt attention entropy low");
    expect(el.querySelector(".cv-cmp-summary")!.textContent).toBe("compare A vs B: prompts differ at 1 / 2 tokens; answers part at step 1");
    expect(el.querySelector(".cv-cmp-scale")!.textContent).toContain("robust spread");
  });
});

describe("compare view: difference heatmap and ranked table", () => {
  it("paints each cell zColor(b − a, the statistic's fixed limit) and says the scale", () => {
    const { el } = mount();
    const root = el.querySelector(".cv-compare") as HTMLElement;
    expect(root.dataset.stat).toBe("step_entropy");
    expect(root.dataset.cells).toBe(String(L * H));
    const canvas = el.querySelector(".cv-cmp-heat") as HTMLCanvasElement;
    const g = heatLayout(L, H, 420);
    const limit = diffScale("step_entropy").limit;
    expect(limit).toBe(3);
    for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) {
      expect(rec.fillAt(canvas, g.left + h * g.cw, g.top + l * g.ch)).toBe(zColor(Math.fround(DIFF_STEP_ENTROPY[l * H + h]), limit));
    }
    expect(rec.fillAt(canvas, g.left + 2 * g.cw, g.top)).toBe(zColor(3, 3)); // 4.5 bits clips to the end colour
    expect(rec.fillAt(canvas, g.left + 1 * g.cw, g.top + g.ch)).toBe("#888"); // undefined
    const legend = el.querySelector(".cv-cmp-heat-legend") as HTMLElement;
    expect(legend.dataset.scale).toBe("B − A, bits, ±3 (clipped)");
    expect(legend.querySelector(".cv-legend-unit")!.textContent).toContain("B − A, bits, ±3 (clipped)");
    expect(legend.querySelector(".cv-legend-lo")!.textContent).toBe("−3");
    expect(legend.querySelector(".cv-legend-hi")!.textContent).toBe("+3");
    expect(legend.title).toContain("8×"); // the basis of the limit
  });

  it("tells the difference of the hovered cell", () => {
    const { el } = mount();
    const canvas = el.querySelector(".cv-cmp-heat") as HTMLCanvasElement;
    const g = heatLayout(L, H, 420);
    canvas.dispatchEvent(new MouseEvent("mousemove", { clientX: g.left + 1 * g.cw + 2, clientY: g.top + 2 }));
    const tip = el.querySelector(".cv-cmp-diff .cv-tip") as HTMLElement;
    expect(tip.hidden).toBe(false);
    expect(tip.textContent).toBe("layer 0 head 1: Δ = −1.25 bits");
    canvas.dispatchEvent(new MouseEvent("click", { clientX: g.left + 2 * g.cw + 2, clientY: g.top + g.ch + 2 }));
    expect(document.querySelector(".cv-compare")!.getAttribute("data-layer")).toBe("1");
    expect(document.querySelector(".cv-compare")!.getAttribute("data-head")).toBe("2");
  });

  it("a ranked row selects {stat, layer, head}; the heatmap switches statistic and outlines the cell", () => {
    const { el, model } = mount();
    const rows = el.querySelectorAll<HTMLElement>(".cv-cmp-table tbody tr");
    expect(rows).toHaveLength(3);
    const first = el.querySelector<HTMLElement>(".cv-cmp-table tr[data-rank='0']")!;
    expect(first.dataset).toMatchObject({ stat: "prompt_entropy", layer: "1", head: "2" });
    expect(Array.from(first.querySelectorAll("td")).map((td) => td.textContent))
      .toEqual(["1", DIFFERENCES[0].text, "2.1", "0.3", "−1.8"]);
    const saves = model.saves;
    first.click();
    expect(model.get("selection")).toMatchObject({ stat: "prompt_entropy", layer: 1, head: 2 });
    expect(model.saves).toBeGreaterThan(saves);
    const root = el.querySelector(".cv-compare") as HTMLElement;
    expect(root.dataset.stat).toBe("prompt_entropy");
    expect((el.querySelector(".cv-cmp-stat") as HTMLSelectElement).value).toBe("prompt_entropy");
    expect(first.classList.contains("cv-selected")).toBe(true);
    const canvas = el.querySelector(".cv-cmp-heat") as HTMLCanvasElement;
    const g = heatLayout(L, H, 420);
    expect(rec.fillAt(canvas, g.left + 2 * g.cw, g.top + g.ch)).toBe(zColor(Math.fround(-1.8), 3));
    const outline = rec.ops.filter((o) => o.canvas === canvas && o.op === "strokeRect").pop()!;
    expect(outline.args).toEqual([g.left + 2 * g.cw - 1, g.top + g.ch - 1, g.cw + 1, g.ch + 1]);
    // a per-layer statistic selects its layer (the row of cells outlined), the statistic stays
    el.querySelector<HTMLElement>(".cv-cmp-table tr[data-rank='1']")!.click();
    expect(model.get("selection")).toMatchObject({ stat: "prompt_entropy", layer: 0, head: null });
    const rowOutline = rec.ops.filter((o) => o.canvas === canvas && o.op === "strokeRect").pop()!;
    expect(rowOutline.args).toEqual([g.left - 1, g.top - 1, H * g.cw + 1, g.ch + 1]);
    expect(el.querySelector<HTMLElement>(".cv-cmp-table tr[data-rank='1']")!.classList.contains("cv-selected")).toBe(true);
    expect(first.classList.contains("cv-selected")).toBe(false);
    // a run statistic shows its metric in the answers and curves
    el.querySelector<HTMLElement>(".cv-cmp-table tr[data-rank='2']")!.click();
    expect(model.get("selection")).toMatchObject({ layer: null, head: null, metric: "entropy" });
    expect(el.querySelector<HTMLElement>(".cv-cmp-table tr[data-rank='2']")!.dataset.layer).toBe("");
  });

  it("re-renders the selection from the model's state alone", () => {
    const { el } = mount({}, { stat: "prompt_sink", layer: 0, head: 1, metric: "surprisal" });
    const root = el.querySelector(".cv-compare") as HTMLElement;
    expect(root.dataset).toMatchObject({ stat: "prompt_sink", layer: "0", head: "1", metric: "surprisal" });
    expect((el.querySelector(".cv-cmp-metric") as HTMLSelectElement).value).toBe("surprisal");
    const canvas = el.querySelector(".cv-cmp-heat") as HTMLCanvasElement;
    const g = heatLayout(L, H, 420);
    expect(rec.ops.filter((o) => o.canvas === canvas && o.op === "strokeRect").pop()!.args).toEqual([g.left + g.cw - 1, g.top - 1, g.cw + 1, g.ch + 1]);
    expect(el.querySelector(".cv-cmp-heat-legend")!.getAttribute("data-scale")).toBe("B − A, probability, ±0.5 (clipped)");
  });

  it("with different shapes shows the two per-layer profiles over relative depth instead, and says why", () => {
    const { el, model } = mount({ same_shape: false });
    const root = el.querySelector(".cv-compare") as HTMLElement;
    expect(root.dataset.sameShape).toBe("false");
    expect(el.querySelector(".cv-cmp-heat")).toBeNull();
    const canvas = el.querySelector(".cv-cmp-profiles") as HTMLCanvasElement;
    expect(canvas).not.toBeNull();
    expect(canvas.dataset.layers).toBe("2,4");
    expect(root.dataset.cells).toBe("0");
    expect(el.querySelector(".cv-cmp-why")!.textContent).toContain("different architectures");
    expect(el.querySelector(".cv-cmp-why")!.textContent).toContain("relative depth");
    const strokes = rec.ops.filter((o) => o.canvas === canvas && o.op === "stroke").map((o) => o.strokeStyle);
    expect(strokes).toEqual([SIDE_COLOR.a, SIDE_COLOR.b]);
    // the last layer of both depths sits at the right end
    const arcs = rec.ops.filter((o) => o.canvas === canvas && o.op === "arc");
    const xs = arcs.map((o) => o.args[0]);
    expect(xs[1]).toBe(xs[xs.length - 1]);
    // every per-layer statistic is offered; picking one redraws
    const stat = el.querySelector(".cv-cmp-stat") as HTMLSelectElement;
    expect(Array.from(stat.options).map((o) => o.value)).toEqual(LAYER_STATS);
    stat.value = "hidden_log_norm";
    stat.dispatchEvent(new Event("change"));
    expect(model.get("selection").stat).toBe("hidden_log_norm");
    expect(canvas.dataset.stat).toBe("hidden_log_norm");
    expect(el.querySelectorAll(".cv-cmp-table tbody tr")).toHaveLength(1);
  });

  it("names the model of each side only when they differ", () => {
    const { el } = mount({ model_names: ["base", "tuned"], labels: ["base", "tuned"] });
    expect(el.querySelector(".cv-cmp-labels")!.textContent).toBe("base (base) vs tuned (tuned)");
    expect(el.querySelector(".cv-cmp-heat-legend")!.getAttribute("data-scale")).toBe("tuned − base, bits, ±3 (clipped)");
    unmountAll();
    const same = mount();
    expect(same.el.querySelector(".cv-cmp-labels")!.textContent).toBe("A vs B");
  });

  it("waits for a payload", () => {
    const { el, model } = mountView("compare", new Uint8Array(0), { selection: { ...SEL } });
    expect(el.querySelector(".cv-cmp-waiting")).not.toBeNull();
    const p = comparePayload();
    model.set("data", new DataView(p.buffer, p.byteOffset, p.byteLength));
    expect(el.querySelector(".cv-compare")!.getAttribute("data-ready")).toBe("1");
    expect(el.querySelectorAll(".cv-cmp-gen")).toHaveLength(2);
  });
});

describe("compare view: pure parts", () => {
  const meta = () => decodePayload(comparePayload()).meta;
  it("defaults and validates the selection", () => {
    expect(compareSelection({}, meta())).toEqual({ stat: "step_entropy", layer: null, head: null, metric: "entropy" });
    expect(compareSelection({ stat: "nope", layer: 9, head: 1, metric: "x" }, meta())).toEqual({ stat: "step_entropy", layer: null, head: null, metric: "entropy" });
    expect(compareSelection({ stat: "prompt_sink", layer: 1, head: 5 }, meta())).toMatchObject({ layer: 1, head: null });
    expect(compareSelection({ stat: "hidden_log_norm" }, { ...meta(), same_shape: false }).stat).toBe("hidden_log_norm");
  });

  it("maps ranked rows to selections", () => {
    const rows = diffRows(meta());
    expect(rowTarget(rows[0], meta())).toEqual({ stat: "prompt_entropy", layer: 1, head: 2 });
    expect(rowTarget(rows[1], meta())).toEqual({ layer: 0, head: null });
    expect(rowTarget(rows[2], meta())).toEqual({ layer: null, head: null, metric: "entropy" });
  });

  it("has a fixed symmetric limit for every per-head statistic in scales.json", () => {
    for (const s of HEAD_STATS) {
      expect(DIFF_SCALES[s].limit).toBeGreaterThan(0);
      expect(DIFF_SCALES[s].basis.length).toBeGreaterThan(10);
    }
    expect(DIFF_SCALES.step_concentration.limit).toBe(0.5);
    expect(DIFF_SCALES.prompt_log_basin.limit).toBe(3);
    const d = diffData(decodePayload(comparePayload()), "step_entropy")!;
    expect(diffTip(d, 0, 2)).toBe("layer 0 head 2: Δ = +4.5 bits (beyond ±3: clipped)");
    expect(diffLegendText(d.scale, ["A", "B"])).toBe("B − A, bits, ±3 (clipped)");
    expect(relDepth(0, 30)).toBe(0);
    expect(relDepth(29, 30)).toBe(1);
    expect(profileDomain("prompt_sink", [0.2], [0.3])).toEqual({ lo: 0, hi: 1, fixed: true });
    expect(profileDomain("hidden_log_norm", [1, 2], [3]).fixed).toBe(false);
  });
});
