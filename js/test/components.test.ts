import { beforeEach, describe, expect, it } from "vitest";
import { flagRows, whereText } from "../src/components/badge";
import { arcControl, edgeStyle, edgesMatch, visibleEdges } from "../src/components/graph";
import { headMark, heatData, heatLayout, hitCell } from "../src/components/heatmap";
import { curveLayout, curveX, metricValues, stepAt, topKRows } from "../src/components/timeline";
import { render } from "../src/render";
import { decodePayload } from "../src/payload";
import { DEFAULT_OPTIONS } from "../src/store";
import { edgesPayload, fakeModel, samplePayload } from "./helpers";

const payload = () => decodePayload(samplePayload());
const dv = (u: Uint8Array) => new DataView(u.buffer, u.byteOffset, u.byteLength);

function mount(view: string, extra: Record<string, any> = {}) {
  const model = fakeModel({
    view, data: dv(samplePayload()), edges: new DataView(new ArrayBuffer(0)),
    selection: { step: 0, token: null, layer: null, head: null, metric: "entropy" },
    options: { ...DEFAULT_OPTIONS }, progress: { step: 3, total: 3, done: true }, live_tokens: [], ...extra,
  });
  const el = document.createElement("div");
  document.body.append(el);
  const cleanup = render({ model, el });
  return { model, el, cleanup };
}

beforeEach(() => { document.body.replaceChildren(); });

describe("health badge", () => {
  it("lists flags with where they first fired", () => {
    const rows = flagRows(payload().meta.health);
    expect(rows.map((r) => r.name)).toHaveLength(6);
    const fired = rows.filter((r) => r.fired);
    expect(fired.map((r) => r.name)).toEqual(["attention_collapse_detected", "high_entropy_steps"]);
    expect(whereText(fired[0])).toBe("first at step 0, layer 1");
    expect(whereText(fired[1])).toBe("first at step 2");
  });

  it("renders the verdict and jumps to a flag's step and layer on click", () => {
    const { el, model } = mount("badge");
    expect(el.querySelector(".cv-badge")!.getAttribute("data-verdict")).toBe("yellow");
    expect(el.querySelectorAll(".cv-flag.cv-fired")).toHaveLength(2);
    (el.querySelector(".cv-flag-jump[data-layer='1']") as HTMLElement).click();
    expect(model.get("selection")).toMatchObject({ step: 0, layer: 1, head: null });
    (el.querySelectorAll(".cv-flag-jump")[1] as HTMLElement).click();
    expect(model.get("selection").step).toBe(2);
    expect(model.saves).toBeGreaterThan(0);
  });
});

describe("token timeline", () => {
  it("gives prompt tokens surprisal only (token 0 has none)", () => {
    const v = metricValues(payload(), "surprisal");
    expect(Number.isNaN(v.prompt[0])).toBe(true);
    expect(Array.from(v.prompt.slice(1))).toEqual([5, 1, 2]);
    expect(Array.from(metricValues(payload(), "entropy").prompt).every(Number.isNaN)).toBe(true);
  });

  it("sorts the top-k alternatives and marks the chosen token", () => {
    const rows = topKRows(payload(), 1);
    expect(rows.map((r) => r.text)).toEqual([" bends", " scatters"]);
    expect(rows.find((r) => r.chosen)!.text).toBe(" scatters");
  });

  it("maps steps to x and back", () => {
    const L = curveLayout(5, 300);
    for (let s = 0; s < 5; s++) expect(stepAt(L, curveX(L, s))).toBe(s);
    expect(stepAt(L, 0)).toBeNull();
  });

  it("renders P + T tokens, recolours on a metric change and selects on click", () => {
    const { el, model } = mount("timeline");
    expect(el.querySelectorAll(".cv-tok.cv-prompt")).toHaveLength(4);
    const gen = el.querySelectorAll<HTMLElement>(".cv-tok.cv-gen");
    expect(gen).toHaveLength(3);
    const before = Array.from(gen).map((g) => g.style.background);
    expect(new Set(before).size).toBe(3);
    model.set("selection", { ...model.get("selection"), metric: "max_prob" });
    const after = Array.from(gen).map((g) => g.style.background);
    expect(after).not.toEqual(before);
    expect(el.querySelector(".cv-legend-unit")!.textContent).toContain("probability");
    gen[2].click();
    expect(model.get("selection").step).toBe(2);
    expect(gen[2].classList.contains("cv-selected")).toBe(true);
    (el.querySelectorAll(".cv-tok.cv-prompt")[1] as HTMLElement).click();
    expect(model.get("selection").token).toBe(1);
  });

  it("moves the step with the arrow keys", () => {
    const { el, model } = mount("timeline");
    const root = el.querySelector(".cv-timeline")!;
    root.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowRight", bubbles: true }));
    expect(model.get("selection").step).toBe(1);
    root.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowLeft", bubbles: true }));
    root.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowLeft", bubbles: true }));
    expect(model.get("selection").step).toBe(0);
  });

  it("shows live tokens and progress before the trace arrives", () => {
    const { el, model } = mount("timeline", { data: new DataView(new ArrayBuffer(0)), progress: { step: 1, total: 8, done: false }, live_tokens: [" It"] });
    expect(el.querySelectorAll(".cv-live")).toHaveLength(1);
    model.set("live_tokens", [" It", " is"]);
    model.set("progress", { step: 2, total: 8, done: false });
    expect(el.querySelectorAll(".cv-live")).toHaveLength(2);
    expect(el.querySelector(".cv-timeline")!.getAttribute("data-progress")).toBe("2/8");
    expect((el.querySelector(".cv-progress") as HTMLElement).hidden).toBe(false);
  });
});

describe("head heatmap", () => {
  it("lays out cells and hit-tests cells, row labels and the corner", () => {
    const g = heatLayout(30, 9, 400);
    expect(g.width).toBeLessThanOrEqual(400);
    expect(hitCell(g, g.left + 2.5 * g.cw, g.top + 4.5 * g.ch)).toEqual({ layer: 4, head: 2 });
    expect(hitCell(g, 2, g.top + 0.5 * g.ch)).toEqual({ layer: 0, head: null });
    expect(hitCell(g, 2, 2)).toEqual({ layer: null, head: null });
    expect(hitCell(g, g.left + 9.5 * g.cw, g.top + 1)).toBeNull();
  });

  it("picks the step's or the prompt's matrix and marks heads", () => {
    const p = payload();
    const s0 = heatData(p, { ...DEFAULT_OPTIONS }, 0)!;
    expect(s0.values).toHaveLength(6);
    expect(s0.values[1]).toBeCloseTo(0.05, 6);
    expect(headMark(s0.entropy![1], s0.concentration![1], p.meta.thresholds)).toBe("collapsed");
    expect(headMark(s0.entropy![4], s0.concentration![4], p.meta.thresholds)).toBe("focused");
    const sink = heatData(p, { ...DEFAULT_OPTIONS, heat_source: "prompt", heat_value: "sink" }, 0)!;
    expect(Array.from(sink.values)).toEqual(Array.from(p.arrays.prompt_sink.data));
    expect(sink.unit).toBe("probability");
  });

  it("renders L x H cells and selects (layer, head) on click", () => {
    const { el, model } = mount("heatmap");
    const root = el.querySelector(".cv-heatmap") as HTMLElement;
    expect(root.dataset.cells).toBe("6");
    expect(root.dataset.collapsed).toBe("1");
    expect(root.dataset.focused).toBe("1");
    root.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowDown", bubbles: true }));
    expect(model.get("selection")).toMatchObject({ layer: 1, head: 0 });
  });
});

describe("attention graph", () => {
  it("filters, styles and arcs edges", () => {
    expect(visibleEdges([0, 2, 5], [0.5, 0.01, 0.2], 0.02)).toEqual([{ index: 0, weight: 0.5 }, { index: 5, weight: 0.2 }]);
    expect(edgeStyle(1, 1).width).toBeGreaterThan(edgeStyle(0.1, 1).width);
    expect(edgeStyle(1, 1).alpha).toBe(1);
    expect(arcControl({ x: 0, y: 10 }, { x: 100, y: 10 }).y).toBeLessThan(10);
  });

  it("draws only edges that answer the current selection", () => {
    const e = decodePayload(edgesPayload(2, 1, null, [0, 2], [0.7, 0.3]));
    expect(edgesMatch(e, 2, 1, null)).toBe(true);
    expect(edgesMatch(e, 2, 1, 0)).toBe(false);
    expect(edgesMatch(null, 2, 1, null)).toBe(false);
  });

  it("renders prompt tokens, asks for a token on click and draws the kernel's edges", () => {
    const { el, model } = mount("graph");
    const root = el.querySelector(".cv-graph") as HTMLElement;
    expect(root.querySelectorAll(".cv-tok")).toHaveLength(4);
    (root.querySelectorAll(".cv-tok")[3] as HTMLElement).click();
    expect(model.get("selection").token).toBe(3);
    expect(root.dataset.state).toBe("stale");
    model.set("edges", dv(edgesPayload(3, null, null, [0, 1, 3], [0.6, 0.01, 0.39])));
    expect(root.dataset.state).toBe("drawn");
    expect(JSON.parse(root.dataset.edges!).map((x: number[]) => x[0])).toEqual([0, 3]);
    expect(root.querySelectorAll(".cv-key")).toHaveLength(1);
    expect(Number(root.dataset.roundtripMs)).toBeGreaterThanOrEqual(0);
    model.set("options", { ...model.get("options"), threshold: 0 });
    expect(JSON.parse(root.dataset.edges!)).toHaveLength(3);
    model.set("options", { ...model.get("options"), incoming: true });
    expect(JSON.parse(root.dataset.inEdges!)).toHaveLength(2);
  });
});

describe("attention graph without prompt telemetry", () => {
  it("says so instead of waiting for the kernel", () => {
    const { el } = mount("graph", {
      data: dv(samplePayload({ has_prompt_attention: false })),
      selection: { step: 0, token: 1, layer: null, head: null, metric: "entropy" },
    });
    const root = el.querySelector(".cv-graph") as HTMLElement;
    expect(root.dataset.state).toBe("none");
    expect(root.querySelector(".cv-graph-info")!.textContent).toContain("prompt_telemetry=False");
  });
});

describe("dashboard", () => {
  it("mounts all four views on one model, so a click in one moves the others", () => {
    const { el, model, cleanup } = mount("dashboard");
    expect(el.querySelector(".cv-badge")).not.toBeNull();
    expect(el.querySelector(".cv-timeline")).not.toBeNull();
    expect(el.querySelector(".cv-heatmap")).not.toBeNull();
    expect(el.querySelector(".cv-graph")).not.toBeNull();
    (el.querySelectorAll(".cv-timeline .cv-tok.cv-prompt")[2] as HTMLElement).click();
    expect((el.querySelector(".cv-graph") as HTMLElement).dataset.token).toBe("2");
    (el.querySelectorAll(".cv-timeline .cv-gen")[1] as HTMLElement).click();
    expect(el.querySelector(".cv-heat-info")!.textContent).toContain("step 1");
    cleanup();
    expect(el.querySelector(".cv-dashboard")).toBeNull();
    model.set("selection", { ...model.get("selection"), step: 2 }); // listeners removed: no throw
  });
});

describe("live progress", () => {
  it("shows the prompt pass as a phase with blocks done, then the tokens", async () => {
    const { progressText } = await import("../src/components/timeline");
    const { PROMPT_PHASE } = await import("../src/store");
    expect(progressText({ step: 0, total: 8, done: false, phase: PROMPT_PHASE, layer: 12, layers: 30 }))
      .toEqual({ label: "reading the prompt: layer 12/30", fraction: 0.4 });
    // before the first block reports, the phase is named (not "generating 0/8")
    expect(progressText({ step: 0, total: 8, done: false, phase: PROMPT_PHASE }).label).toBe("reading the prompt…");
    expect(progressText({ step: 3, total: 8, done: false, phase: "generating", layer: 30, layers: 30 }))
      .toEqual({ label: "generating 3/8", fraction: 3 / 8 });
  });
});
