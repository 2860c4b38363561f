/** Colour scales that mean something: one fixed domain per metric (the same colour is the same number
 * in every trace, step and view), legends that say so, and canvases that follow a theme switch. */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { heatData, heatLayout, lensData, lensLayout } from "../src/components/heatmap";
import { decodePayload } from "../src/payload";
import { HEAT_METRICS, heatColor, metricDef, metricDomain, tokenColor } from "../src/scales";
import { DEFAULT_OPTIONS } from "../src/store";
import { f4, lensPayload, mountView, recordCanvas, samplePayload, unmountAll } from "./helpers";

const L = 2, H = 3, T = 3;

/** Head entropies whose range differs per step: step 0 spans 0.5..2 bits, step 1 spans 2..9, step 2 is 4 everywhere.
 * Cell (layer 0, head 0) is 2 bits at steps 0 and 1. */
const STEPPED = f4([T, L, H], [2, 0.5, 1, 1, 1, 1, /* step 1 */ 2, 8, 9, 9, 9, 9, /* step 2 */ 4, 4, 4, 4, 4, 4]);

let rec: ReturnType<typeof recordCanvas>;
beforeEach(() => {
  document.body.replaceChildren();
  for (const a of ["data-jp-theme-light", "data-jp-theme-name", "style"]) document.body.removeAttribute(a);
  rec = recordCanvas();
});
afterEach(() => { unmountAll(); rec.restore(); vi.restoreAllMocks(); });

const tick = () => new Promise((r) => setTimeout(r, 0));

describe("token colours have one scale for every trace", () => {
  it("paints the same entropy the same in a confident and an unsure run, and a confident token calm", () => {
    const confident = mountView("timeline", samplePayload({}, { entropy: f4([T], [0.14, 0.05, 0.1]) }));
    const unsure = mountView("timeline", samplePayload({}, { entropy: f4([T], [0.14, 5, 7.5]) }));
    const bg = (el: HTMLElement, i: number) => el.querySelectorAll<HTMLElement>(".cv-gen")[i].style.background;
    const def = metricDef("entropy");
    // 0.14 bits was the top of the confident run's own range, painted alarm red; now its colour is the
    // colour of 0.14 bits on the fixed 0-8 bit scale, in both runs
    expect(bg(confident.el, 0)).toBe(bg(unsure.el, 0));
    expect(bg(confident.el, 0)).toBe(tokenColor(Math.fround(0.14), def, metricDomain(def))); // the payload is float32
    expect(bg(confident.el, 0)).not.toBe(tokenColor(8, def, metricDomain(def)));
    expect(bg(unsure.el, 2)).not.toBe(bg(confident.el, 0));
  });

  it("states the domain and unit in the timeline legend", () => {
    const { el, model } = mountView("timeline", samplePayload());
    const legend = el.querySelector(".cv-timeline .cv-legend") as HTMLElement;
    expect(legend.querySelector(".cv-legend-unit")!.textContent).toContain("entropy, bits, 0–8 (≥ 8 clipped)");
    expect(legend.querySelector(".cv-legend-lo")!.textContent).toBe("0");
    expect(legend.querySelector(".cv-legend-hi")!.textContent).toBe("≥ 8");
    expect(legend.title).toContain("256 tokens"); // why the cap is 8 bits
    model.set("selection", { ...model.get("selection"), metric: "max_prob" });
    expect(legend.querySelector(".cv-legend-unit")!.textContent).toContain("max probability, probability, 0–1");
    expect(legend.querySelector(".cv-legend-hi")!.textContent).toBe("1");
  });

  it("draws the curve on the fixed domain: the axis reads 0 and ≥ 8 bits whatever the trace's range", () => {
    const { el } = mountView("timeline", samplePayload({}, { entropy: f4([T], [0.14, 0.05, 0.1]) }));
    const canvas = el.querySelector(".cv-curve") as HTMLCanvasElement;
    const texts = rec.ops.filter((o) => o.canvas === canvas && o.op === "fillText").map((o) => o.args[0]);
    expect(texts).toContain("≥ 8");
    expect(texts).toContain("0");
  });
});

describe("the heatmap's colours do not rescale per step", () => {
  it("gives a value the same colour at two steps whose ranges differ (heatData)", () => {
    const p = decodePayload(samplePayload({}, { head_entropy: STEPPED }));
    const s0 = heatData(p, { ...DEFAULT_OPTIONS }, 0)!, s1 = heatData(p, { ...DEFAULT_OPTIONS }, 1)!;
    expect([s0.values[0], s1.values[0]]).toEqual([2, 2]);
    expect([s0.lo, s0.hi]).toEqual([s1.lo, s1.hi]); // was 0..2 at step 0 and 0..9 at step 1
    expect(heatColor(s0.values[0], s0.def)).toBe(heatColor(s1.values[0], s1.def));
  });

  it("draws cell (0, 0) in the same colour at step 0 and at step 1", () => {
    const { el, model } = mountView("heatmap", samplePayload({}, { head_entropy: STEPPED }));
    const canvas = el.querySelector(".cv-heat-canvas") as HTMLCanvasElement;
    const g = heatLayout(L, H, 420);
    const at0 = rec.fillAt(canvas, g.left, g.top);
    model.set("selection", { ...model.get("selection"), step: 1 });
    expect(el.querySelector(".cv-heat-info")!.textContent).toBe("step 1");
    const at1 = rec.fillAt(canvas, g.left, g.top);
    expect(at0).toBeDefined();
    expect(at1).toBe(at0);
    expect(at0).toBe(heatColor(2, HEAT_METRICS.entropy));
    // the step's largest value (9 bits) is not the top colour (10 bits is)
    expect(rec.fillAt(canvas, g.left + 2 * g.cw, g.top)).not.toBe(heatColor(10, HEAT_METRICS.entropy));
  });

  it("keeps the lens on its fixed 0-16 bit scale", () => {
    const d = lensData(decodePayload(lensPayload()))!;
    expect([d.lo, d.hi]).toEqual([0, 16]);
    const { el, model } = mountView("heatmap", lensPayload());
    model.set("options", { ...model.get("options"), heat_source: "lens" });
    const legend = el.querySelector(".cv-heat-legend") as HTMLElement;
    expect(legend.dataset.scale).toBe("lens entropy, bits, 0–16 (≥ 16 clipped)");
    expect(legend.querySelector(".cv-legend-hi")!.textContent).toBe("≥ 16");
    const canvas = el.querySelector(".cv-heat-canvas") as HTMLCanvasElement;
    const g = lensLayout(2, 3, 420);
    expect(rec.fillAt(canvas, g.left, g.top)).toBe(heatColor(0, HEAT_METRICS.lens_entropy)); // step 0, layer 0: 0 bits
    expect(rec.fillAt(canvas, g.left + 2 * g.cw, g.top + g.ch)).toBe(heatColor(Math.fround(2.1), HEAT_METRICS.lens_entropy)); // not the top colour
  });
});

describe("the heatmap legend", () => {
  it("is one compact line that states domain and unit, with the full statement on hover", () => {
    const { el, model } = mountView("heatmap", samplePayload());
    const legend = el.querySelector(".cv-heat-legend") as HTMLElement;
    expect(legend.querySelector(".cv-legend-lo")!.textContent).toBe("0");
    expect(legend.querySelector(".cv-legend-hi")!.textContent).toBe("≥ 10");
    const unit = legend.querySelector(".cv-legend-unit") as HTMLElement;
    expect(unit.textContent).toBe("bits · ✕ collapsed · ○ focused");
    expect(legend.dataset.scale).toBe("attention entropy, bits, 0–10 (≥ 10 clipped)");
    expect(legend.title).toContain("attention entropy, bits, 0–10 (≥ 10 clipped)");
    expect(legend.title).toContain("✕ collapsed: entropy < 0.1 bits");
    // short enough for one line at the usual widths (320-520 px at 11 px); CSS nowrap + ellipsis as a last resort
    const visible = Array.from(legend.children).map((c) => c.textContent).join(" ");
    expect(visible.length).toBeLessThanOrEqual(40);
    const css = (el.querySelector("style") as HTMLStyleElement).textContent!;
    expect(css).toMatch(/\.cv-legend \{[^}]*white-space: nowrap/);
    expect(css).toMatch(/\.cv-legend \.cv-legend-unit \{[^}]*text-overflow: ellipsis/);
    model.set("options", { ...model.get("options"), heat_source: "prompt", heat_value: "basin" });
    expect(legend.dataset.scale).toBe("basin (middle ÷ other keys), ratio, 0.01–100 log scale (≤ 0.01 and ≥ 100 clipped)");
    expect([legend.querySelector(".cv-legend-lo")!.textContent, legend.querySelector(".cv-legend-hi")!.textContent]).toEqual(["≤ 0.01", "≥ 100"]);
    expect(legend.querySelector(".cv-legend-unit")!.textContent).toBe("ratio");
  });
});

describe("a theme switch redraws the canvases", () => {
  it("repaints the heatmap in the new theme's colours when JupyterLab's theme attributes change", async () => {
    document.body.setAttribute("data-jp-theme-light", "true");
    document.body.setAttribute("data-jp-theme-name", "JupyterLab Light");
    const { el, cleanup } = mountViewWithCleanup("heatmap");
    const root = el.querySelector(".cv-heatmap") as HTMLElement;
    const canvas = root.querySelector("canvas") as HTMLCanvasElement;
    expect(rec.textColor(canvas, "h0")).toBe("#222"); // no --jp-* variable yet: the fallback
    expect(root.dataset.themeDraws).toBeUndefined();
    // JupyterLab switches: new CSS variables, then the body attributes. (happy-dom does not inherit custom
    // properties, where a browser takes JupyterLab's from :root: set them on the view's root, where themeColor reads them.)
    root.style.setProperty("--jp-ui-font-color1", "rgb(240, 240, 240)");
    document.body.setAttribute("data-jp-theme-light", "false");
    document.body.setAttribute("data-jp-theme-name", "JupyterLab Dark");
    await tick();
    expect(Number(root.dataset.themeDraws)).toBeGreaterThanOrEqual(1);
    expect(rec.textColor(canvas, "h0")).toBe("rgb(240, 240, 240)");
    // after the view's cleanup the observer is disconnected: a later switch draws nothing
    cleanup();
    await new Promise((r) => setTimeout(r, 40)); // let a pending next-frame redraw (cancelled by cleanup) pass
    const mine = () => rec.ops.filter((o) => o.canvas === canvas).length;
    const drawsAfter = root.dataset.themeDraws, opsAfter = mine();
    document.body.setAttribute("data-jp-theme-light", "true");
    document.body.setAttribute("data-jp-theme-name", "JupyterLab Light");
    await new Promise((r) => setTimeout(r, 40));
    expect(root.dataset.themeDraws).toBe(drawsAfter);
    expect(mine()).toBe(opsAfter);
  });

  it("ignores other attribute changes on <body>", async () => {
    const { el } = mountViewWithCleanup("heatmap");
    const root = el.querySelector(".cv-heatmap") as HTMLElement;
    document.body.setAttribute("data-jp-theme-light", "true"); // first mount already saw no attribute: this is a change
    await tick();
    // the theme redraw repeats on the next animation frame: let it land before counting
    await new Promise((r) => requestAnimationFrame(() => r(null)));
    await tick();
    const n = root.dataset.themeDraws;
    document.body.classList.add("lm-mod-override-cursor"); // JupyterLab toggles classes while dragging
    await tick();
    expect(root.dataset.themeDraws).toBe(n);
  });

  it("repaints the timeline curve in the new brand colour", async () => {
    const { el } = mountViewWithCleanup("timeline");
    const root = el.querySelector(".cv-timeline") as HTMLElement;
    const canvas = root.querySelector("canvas") as HTMLCanvasElement;
    const lineColour = () => rec.ops.filter((o) => o.canvas === canvas && o.op === "stroke").map((o) => o.strokeStyle);
    expect(lineColour()).toContain("#1976d2"); // no theme: the fallback
    expect(lineColour()).not.toContain("rgb(100, 181, 246)");
    root.style.setProperty("--jp-brand-color1", "rgb(100, 181, 246)"); // happy-dom: on the root (see above)
    document.body.setAttribute("data-jp-theme-name", "JupyterLab Dark");
    await tick();
    expect(Number(root.dataset.themeDraws)).toBeGreaterThanOrEqual(1);
    expect(lineColour()).toContain("rgb(100, 181, 246)");
  });

  it("follows prefers-color-scheme where the page has no JupyterLab theme (VS Code, Colab)", () => {
    let listener: (() => void) | null = null;
    const mq = {
      matches: false, media: "(prefers-color-scheme: dark)",
      addEventListener: (_: string, f: () => void) => { listener = f; },
      removeEventListener: (_: string, f: () => void) => { if (listener === f) listener = null; },
    };
    vi.spyOn(window, "matchMedia").mockImplementation(() => mq as any);
    const { el, cleanup } = mountViewWithCleanup("heatmap");
    const root = el.querySelector(".cv-heatmap") as HTMLElement;
    expect(listener).not.toBeNull();
    mq.matches = true;
    listener!();
    expect(root.dataset.themeDraws).toBe("1");
    cleanup();
    expect(listener).toBeNull(); // removed on cleanup
  });
});

function mountViewWithCleanup(view: string) {
  return mountView(view, samplePayload());
}
