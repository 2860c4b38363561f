/** The attention graph at any prompt length: markers for edge ends scrolled out of view (which ones,
 * their labels, how they stack), clicking one, the legend and arrowheads, and a scroll height that
 * redraws never change. happy-dom has no layout, so the long-prompt tests give the view a fake one. */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  MARKER_CAP, chipWidth, markerLabel, markerText, moreLabel, offscreenMarkers, packMarkers, sideOf, type Marker, type Span,
} from "../src/components/graph";
import { encodePayload, f4, mountView, recordCanvas, samplePayload, unmountAll } from "./helpers";

const dv = (u: Uint8Array) => new DataView(u.buffer, u.byteOffset, u.byteLength);
const N = 200;
const TOKENS = ["<|im_start|>", ...Array.from({ length: N - 1 }, (_, i) => (i === 41 ? "\n" : ` w${i + 1}`))];
/** Fake layout: 10 tokens per 20 px line below an 18 px top padding; a 100 px tall box, 1000 px wide. */
const PER_LINE = 10, LINE = 20, PAD = 22, BOX = 100, WIDTH = 1000;
const spanOf = (i: number): Span => ({ top: PAD + Math.floor(i / PER_LINE) * LINE, bottom: PAD + Math.floor(i / PER_LINE) * LINE + 18 });

function edges(token: number, out: [number, number][], inc: [number, number][] = [], layer: number | null = null, head: number | null = null) {
  return dv(encodePayload({ token, layer, head, incoming: inc.length > 0 }, {
    out_keys: { dtype: "i4", shape: [out.length], values: out.map((x) => x[0]) },
    out_weights: f4([out.length], out.map((x) => x[1])),
    in_queries: { dtype: "i4", shape: [inc.length], values: inc.map((x) => x[0]) },
    in_weights: f4([inc.length], inc.map((x) => x[1])),
  }));
}

const def = (e: object, k: string, get: () => number) => Object.defineProperty(e, k, { configurable: true, get });

/** Give a mounted graph a layout: token positions, the box's size and scroll, the strips. The box's scroll
 * height is its content's, or further down when something inside it is placed lower by an inline
 * top + height (what the old edge canvas did: it sat at `top: scrollTop` inside the scrolled content). */
function fakeLayout(root: HTMLElement) {
  const body = root.querySelector(".cv-graph-body") as HTMLElement;
  const frame = root.querySelector(".cv-graph-frame") as HTMLElement;
  const [top, bottom] = Array.from(root.querySelectorAll<HTMLElement>(".cv-marker-strip"));
  const reads = { tokens: 0 };
  root.querySelectorAll<HTMLElement>(".cv-graph-inner .cv-tok").forEach((t, i) => {
    def(t, "offsetTop", () => { reads.tokens++; return spanOf(i).top; }); def(t, "offsetHeight", () => 18);
    def(t, "offsetLeft", () => 4 + (i % PER_LINE) * 50); def(t, "offsetWidth", () => 40);
  });
  const content = PAD + Math.ceil(N / PER_LINE) * LINE + 4;
  const below = (e: HTMLElement) => 4 + (parseFloat(e.style.top) || 0) + (parseFloat(e.style.height) || 0);
  let scrollTop = 0;
  def(body, "clientHeight", () => BOX);
  def(body, "scrollHeight", () => Math.max(content, ...Array.from(body.querySelectorAll<HTMLElement>("*")).map(below)));
  Object.defineProperty(body, "scrollTop", {
    configurable: true, get: () => scrollTop, set: (v: number) => { scrollTop = Math.max(0, Math.min(v, body.scrollHeight - BOX)); },
  });
  def(body, "offsetTop", () => 22);
  def(frame, "clientWidth", () => WIDTH); def(frame, "clientHeight", () => BOX + 44);
  for (const s of [top, bottom]) def(s, "clientWidth", () => WIDTH);
  def(bottom, "offsetTop", () => 22 + BOX);
  def(top, "offsetHeight", () => 22);
  const scrollTo = async (y: number) => { body.scrollTop = y; body.dispatchEvent(new Event("scroll")); await nextFrame(); };
  return { body, frame, top, bottom, scrollTo, reads };
}

const nextFrame = () => new Promise((r) => requestAnimationFrame(() => r(null)));

/** A 200-token prompt in the graph view, laid out, scrolled to the bottom, the last token selected. */
async function longGraph(extra: Record<string, any> = {}) {
  const data = samplePayload({ n_prompt: N }, { prompt_tokens: TOKENS });
  const { el, model } = mountView("graph", data, extra);
  const root = el.querySelector(".cv-graph") as HTMLElement;
  const lay = fakeLayout(root);
  await lay.scrollTo(1e9);
  return { root, model, ...lay };
}

beforeEach(() => { document.body.replaceChildren(); });
afterEach(() => { unmountAll(); vi.restoreAllMocks(); });

describe("off-screen edge markers (pure)", () => {
  it("a token is out of view when its middle is above or below the visible window", () => {
    expect(sideOf({ top: 0, bottom: 18 }, 100, 200)).toBe("above");
    expect(sideOf({ top: 95, bottom: 113 }, 100, 200)).toBeNull(); // mostly visible
    expect(sideOf({ top: 185, bottom: 203 }, 100, 200)).toBeNull();
    expect(sideOf({ top: 200, bottom: 218 }, 100, 200)).toBe("below");
  });

  it("labels say direction, index, the quoted token and the weight with 2 decimals", () => {
    expect(markerLabel("out", 0, "<|im_start|>", Math.fround(0.41))).toBe("→ token 0 '<|im_start|>' 0.41");
    expect(markerLabel("in", 12, " sky", 0.199)).toBe("← token 12 ' sky' 0.20");
    expect(markerLabel("self", 7, "x", 1)).toBe("● token 7 'x' (selected)");
    expect(markerText("\n\t")).toBe("↵⇥");
    expect(markerText("")).toBe("∅");
    expect(markerText("a".repeat(40))).toBe(`${"a".repeat(15)}…`);
    expect(Array.from(markerText("😀".repeat(20))).length).toBe(16); // never splits a character
  });

  it("picks the ends out of view, above and below, strongest first, the selected token first when it is out of view", () => {
    const out = [{ index: 0, weight: 0.41 }, { index: 3, weight: 0.05 }, { index: 12, weight: 0.3 }, { index: 95, weight: 0.2 }, { index: 99, weight: 0.1 }];
    const inc = [{ index: 99, weight: 0.4 }, { index: 180, weight: 0.07 }, { index: 150, weight: 0.09 }];
    const view = [spanOf(90).top, spanOf(90).top + BOX] as const; // lines of tokens 90..139 visible
    const m = offscreenMarkers(99, out, inc, spanOf, view[0], view[1], (i) => TOKENS[i]);
    expect(m.above.map((x) => [x.dir, x.index])).toEqual([["out", 0], ["out", 12], ["out", 3]]);
    expect(m.above[0].label).toBe("→ token 0 '<|im_start|>' 0.41");
    expect(m.below.map((x) => [x.dir, x.index])).toEqual([["in", 150], ["in", 180]]);
    expect(m.below.every((x) => x.side === "below" && x.label.startsWith("← token "))).toBe(true);
    // scrolled to the top: the selected token and its visible neighbours go below, the self marker first
    const top = offscreenMarkers(99, out, inc, spanOf, 0, BOX, (i) => TOKENS[i]);
    expect(top.above).toEqual([]);
    expect(top.below.map((x) => [x.dir, x.index])).toEqual([["self", 99], ["out", 95], ["in", 150], ["in", 180]]);
    // nothing laid out: no markers
    expect(offscreenMarkers(99, out, inc, () => null, 0, BOX, (i) => TOKENS[i])).toEqual({ above: [], below: [] });
  });

  it("stacks markers side by side without overlap, at most MARKER_CAP, then '+k more'", () => {
    const ms: Marker[] = Array.from({ length: 7 }, (_, i) => ({ index: i, weight: 0.5 - i / 20, dir: "out", side: "above", label: markerLabel("out", i, "ab", 0.5 - i / 20) }));
    const w = (m: Marker) => chipWidth(m.label, 7);
    const more = chipWidth(moreLabel(7), 7);
    const wide = packMarkers(ms, 5000, w, more);
    expect(wide.shown.map((m) => m.index)).toEqual([0, 1, 2, 3]);
    expect(wide.hidden.map((m) => m.index)).toEqual([4, 5, 6]);
    expect(MARKER_CAP).toBe(4);
    // a narrow strip: as many as fit with room left for "+k more"; their widths and gaps never exceed it
    const width = 3 * w(ms[0]) + more + 3 * 4 + 2;
    const narrow = packMarkers(ms, width, w, more);
    expect(narrow.shown).toHaveLength(3);
    expect(narrow.shown.reduce((s, m) => s + w(m), 0) + more + 3 * 4).toBeLessThanOrEqual(width);
    // the strongest is always shown; everything fits without the "+k more" chip when nothing is hidden
    expect(packMarkers(ms, 10, w, more).shown).toHaveLength(1);
    expect(packMarkers(ms.slice(0, 2), 2 * w(ms[0]) + 4, w, more)).toMatchObject({ hidden: [] });
    expect(packMarkers([], 100, w, more)).toEqual({ shown: [], hidden: [] });
  });
});

describe("attention graph of a long prompt", () => {
  it("ends edges to tokens out of view at labelled markers; a click scrolls there and highlights it", async () => {
    const rec = recordCanvas();
    const { root, model, body, top, bottom } = await longGraph();
    const canvas = root.querySelector("canvas.cv-edges") as HTMLCanvasElement;
    /** The ops of the canvas's last paint. */
    const lastPaint = () => { const ops = rec.ops.filter((o) => o.canvas === canvas); return ops.slice(ops.map((o) => o.op).lastIndexOf("clearRect")); };
    expect(body.scrollTop).toBe(body.scrollHeight - BOX);
    (root.querySelector(`.cv-graph-inner .cv-tok[data-token='${N - 1}']`) as HTMLElement).click();
    model.set("edges", edges(N - 1, [[0, 0.41], [1, 0.03], [5, 0.05], [7, 0.04], [9, 0.06], [11, 0.025], [190, 0.2], [N - 1, 0.1]]));
    expect(root.dataset.state).toBe("drawn");
    expect(root.querySelector(".cv-graph-frame")!.classList.contains("cv-scrolls")).toBe(true);
    const chips = Array.from(top.querySelectorAll<HTMLElement>(".cv-marker:not(.cv-marker-probe)"));
    expect(chips.map((c) => c.textContent)).toEqual([
      "→ token 0 '<|im_start|>' 0.41", "→ token 9 ' w9' 0.06", "→ token 5 ' w5' 0.05", "→ token 7 ' w7' 0.04", "+2 more"]);
    expect(Number(chips[0].dataset.weight)).toBe(Math.fround(0.41));
    expect(chips[4].dataset.count).toBe("2");
    expect(chips[4].title).toContain("→ token 1 ' w1' 0.03");
    expect(bottom.querySelectorAll(".cv-marker")).toHaveLength(0); // 190 and the source are in view
    expect(JSON.parse(root.dataset.markers!).map((m: any) => m.token)).toEqual([0, 9, 5, 7]);
    expect(root.dataset.markersHidden).toBe("2");

    chips[0].click();
    const tok0 = root.querySelector(".cv-graph-inner .cv-tok[data-token='0']") as HTMLElement;
    expect(tok0.classList.contains("cv-flash")).toBe(true);
    expect(sideOf(spanOf(0), body.scrollTop, body.scrollTop + BOX)).toBeNull(); // token 0 is in view
    expect(model.get("selection").token).toBe(N - 1); // the selection stays
    await nextFrame(); // markers follow the scroll: token 0 is in view, the selected token went below
    const now = JSON.parse(root.dataset.markers!);
    expect(now.some((m: any) => m.token === 0)).toBe(false);
    expect(bottom.querySelector(".cv-marker")!.textContent).toBe(`● token ${N - 1} ' w${N - 1}' (selected)`);
    expect(top.querySelectorAll(".cv-marker:not(.cv-marker-probe)")).toHaveLength(0);
    // every edge to a visible token (0, 1, 5, 7, 9, 11) starts at the selected token's marker; 190 is a marker too
    expect(lastPaint().filter((o) => o.op === "fill")).toHaveLength(6);
    expect(lastPaint().filter((o) => o.op === "moveTo").length).toBeGreaterThanOrEqual(12); // 6 arcs + 6 arrowheads
    (bottom.querySelector(".cv-marker-self") as HTMLElement).click(); // back to the selected token
    await nextFrame();
    expect(top.querySelector(".cv-marker:not(.cv-marker-probe)")!.textContent).toBe("→ token 0 '<|im_start|>' 0.41");
    // arcs: to token 190 and one per top marker (4 chips + "+2 more"): 6 arrowheads
    expect(lastPaint().filter((o) => o.op === "fill")).toHaveLength(6);
    rec.restore();
  });

  it("marks incoming ends ('attended by') below and outgoing above, with their own arrowheads", async () => {
    const rec = recordCanvas();
    try {
      const { root, model, top, bottom, scrollTo } = await longGraph({ options: { threshold: 0.02, incoming: true } });
      model.set("selection", { ...model.get("selection"), token: 100 });
      model.set("edges", edges(100, [[0, 0.41], [95, 0.2], [100, 0.1]], [[100, 0.1], [102, 0.3], [190, 0.25]]));
      await scrollTo(spanOf(90).top); // tokens 90..139 in view
      expect(Array.from(top.querySelectorAll(".cv-marker:not(.cv-marker-probe)")).map((c) => c.textContent)).toEqual(["→ token 0 '<|im_start|>' 0.41"]);
      expect(Array.from(bottom.querySelectorAll(".cv-marker")).map((c) => c.textContent)).toEqual(["← token 190 ' w190' 0.25"]);
      expect(bottom.querySelector(".cv-marker")!.classList.contains("cv-marker-in")).toBe(true);
      // outgoing: solid blue lines with filled arrowheads; incoming: dashed orange lines with open ones
      const canvas = root.querySelector("canvas.cv-edges") as HTMLCanvasElement;
      const ops = rec.ops.filter((o) => o.canvas === canvas);
      const last = ops.map((o) => o.op).lastIndexOf("clearRect");
      const frame = ops.slice(last);
      expect(frame.filter((o) => o.op === "fill").every((o) => o.fillStyle.includes("25, 118, 210"))).toBe(true);
      expect(frame.filter((o) => o.op === "fill").length).toBe(2); // token 95 and the marker of token 0
      expect(frame.some((o) => o.op === "setLineDash" && o.args[0].length === 2)).toBe(true);
      expect(frame.filter((o) => o.op === "stroke" && o.strokeStyle.includes("230, 97, 0")).length).toBe(4); // 2 lines + 2 chevrons
      // the legend names both directions; "attended by" is dimmed while incoming edges are off
      const legend = root.querySelector(".cv-graph-legend")!;
      expect(Array.from(legend.querySelectorAll(".cv-legend-item")).map((e) => e.textContent)).toEqual(["→ attends to", "← attended by"]);
      expect(legend.querySelectorAll("svg path")).toHaveLength(2);
      expect(legend.querySelector(".cv-legend-in")!.classList.contains("cv-off")).toBe(false);
      model.set("options", { ...model.get("options"), incoming: false });
      expect(legend.querySelector(".cv-legend-in")!.classList.contains("cv-off")).toBe(true);
      expect(bottom.querySelectorAll(".cv-marker")).toHaveLength(0);
    } finally { rec.restore(); }
  });

  it("keeps the scroll height: redraws at the bottom never grow the scrolled content", async () => {
    const rec = recordCanvas();
    try {
      const { root, model, body, scrollTo } = await longGraph();
      const canvas = root.querySelector("canvas.cv-edges") as HTMLCanvasElement;
      expect(body.contains(canvas)).toBe(false); // the arcs' canvas is not part of what scrolls
      model.set("selection", { ...model.get("selection"), token: N - 1 });
      model.set("edges", edges(N - 1, [[0, 0.41], [190, 0.2]]));
      const height = body.scrollHeight;
      const size = [canvas.style.width, canvas.style.height];
      for (let i = 0; i < 6; i++) {
        await scrollTo(1e9);
        expect(body.scrollHeight).toBe(height);
        await scrollTo(0);
        expect(body.scrollHeight).toBe(height);
      }
      expect([canvas.style.width, canvas.style.height]).toEqual(size); // sized from the frame, not the scroll
      expect(Array.from(body.querySelectorAll<HTMLElement>("*")).filter((e) => e.style.top || e.style.height)).toEqual([]);
    } finally { rec.restore(); }
  });

  it("a scrolled frame reads no token positions: they are read once per selection, for the edges' ends only", async () => {
    const { model, reads, scrollTo } = await longGraph();
    reads.tokens = 0;
    model.set("selection", { ...model.get("selection"), token: N - 1 });
    model.set("edges", edges(N - 1, [[0, 0.41], [5, 0.1], [190, 0.2]]));
    const perSelection = reads.tokens;
    expect(perSelection).toBeGreaterThan(0);
    expect(perSelection).toBeLessThan(20); // the selected token and its 3 ends (and scrolling it into view), not all 200
    for (const y of [0, 150, 300, 1e9]) await scrollTo(y);
    expect(reads.tokens).toBe(perSelection);
  });

  it("repaints at most once per animation frame however many scroll events arrive", async () => {
    const rec = recordCanvas();
    try {
      const { root, model, body } = await longGraph();
      model.set("selection", { ...model.get("selection"), token: N - 1 });
      model.set("edges", edges(N - 1, [[0, 0.41], [190, 0.2]]));
      const canvas = root.querySelector("canvas.cv-edges") as HTMLCanvasElement;
      const clears = () => rec.ops.filter((o) => o.canvas === canvas && o.op === "clearRect").length;
      const before = clears();
      for (let i = 0; i < 20; i++) { body.scrollTop = i * 5; body.dispatchEvent(new Event("scroll")); }
      expect(clears()).toBe(before);
      await nextFrame();
      expect(clears()).toBe(before + 1);
    } finally { rec.restore(); }
  });
});
