/** Hybrid stacks (Jamba, Qwen3-Next, LFM2…): layers without softmax attention read "no attention". */
import { beforeEach, describe, expect, it } from "vitest";
import { heatData, heatLayout, heatTip, NO_ATTENTION } from "../src/components/heatmap";
import { heatColor } from "../src/scales";
import { decodePayload, noAttentionLayers } from "../src/payload";
import { DEFAULT_OPTIONS } from "../src/store";
import { edgesPayload, hybridPayload, mountView, noAttentionEdges, samplePayload } from "./helpers";

const dv = (u: Uint8Array) => new DataView(u.buffer, u.byteOffset, u.byteLength);

function mount(view: string, extra: Record<string, any> = {}) {
  return mountView(view, hybridPayload(), extra);
}

/** Hover or click the heatmap canvas at layout coordinates (the canvas sits at 0, 0 here). */
function mouse(canvas: HTMLCanvasElement, type: string, x: number, y: number) {
  canvas.dispatchEvent(new MouseEvent(type, { clientX: x, clientY: y, bubbles: true }));
}

beforeEach(() => { document.body.replaceChildren(); });

describe("attention layers in the payload meta", () => {
  it("lists the layers without attention per stack, none when the meta is silent", () => {
    const p = decodePayload(hybridPayload({ attention_layers: [1], prompt_attention_layers: [0, 1] }));
    expect([...noAttentionLayers(p.meta, "step")]).toEqual([0]);
    expect([...noAttentionLayers(p.meta, "prompt")]).toEqual([]);
    expect([...noAttentionLayers(decodePayload(samplePayload()).meta, "step")]).toEqual([]);
  });
});

describe("head heatmap of a hybrid stack", () => {
  it("marks the no-attention rows and keeps NaN out of the colour scale", () => {
    const p = decodePayload(hybridPayload());
    const d = heatData(p, { ...DEFAULT_OPTIONS }, 0)!;
    expect([...d.noAttention]).toEqual([0]);
    expect(Number.isFinite(d.lo) && Number.isFinite(d.hi)).toBe(true);
    // the scale is the fixed attention-entropy domain (0-10 bits), no longer the step's largest finite
    // value (2.5): NaN cannot leak into it, and a colour means the same number at every step
    expect([d.lo, d.hi]).toEqual([0, 10]);
    expect(heatColor(d.values[2], d.def)).toBe("#888"); // layer 0 (no attention) is NaN: grey, never a colour of the scale
    expect(heatTip(d, 3, 0, 1)).toBe(`layer 0 · ${NO_ATTENTION}`);
    expect(heatTip(d, 3, 0, null)).toContain("no attention");
    expect(heatTip(d, 3, 1, 0)).toBe("layer 1, head 0: attention entropy 2 bits");
    expect(heatTip(d, 3, 1, 2)).not.toContain("no attention"); // a NaN head of a layer WITH attention
    const pr = heatData(p, { ...DEFAULT_OPTIONS, heat_source: "prompt", heat_value: "basin" }, 0)!;
    expect([...pr.noAttention]).toEqual([0]);
    expect([pr.lo, pr.hi]).toEqual([0.01, 100]); // basin: a fixed log scale, not the prompt's largest value (2)
  });

  it("tells the user which layers have no attention (legend and tooltip) and still selects them", () => {
    const { el, model } = mount("heatmap");
    const root = el.querySelector(".cv-heatmap") as HTMLElement;
    expect(root.dataset.cells).toBe("6");
    expect(root.dataset.noAttention).toBe("0");
    expect(root.dataset.collapsed).toBe("0"); // NaN never counts as a collapsed head
    expect(root.dataset.focused).toBe("1");
    // the legend is one compact line: the layers visibly, what "no attention" means on hover
    expect(root.querySelector(".cv-heat-noattn")!.textContent).toBe("no attention: layer 0");
    expect(root.querySelector<HTMLElement>(".cv-heat-noattn")!.title).toContain("no attention (state-space");

    const canvas = root.querySelector("canvas") as HTMLCanvasElement;
    const tip = root.querySelector(".cv-tip") as HTMLElement;
    const g = heatLayout(2, 3, 420); // a detached render lays out at 420 px
    expect(parseFloat(canvas.style.width)).toBe(g.width);
    mouse(canvas, "mousemove", g.left + 1.5 * g.cw, g.top + 0.5 * g.ch); // layer 0, head 1
    expect(tip.hidden).toBe(false);
    expect(tip.textContent).toBe("layer 0 · no attention (state-space / linear-attention / convolution block)");
    mouse(canvas, "mousemove", 4, g.top + 0.5 * g.ch); // the row label of layer 0
    expect(tip.textContent).toContain("layer 0 · no attention");
    mouse(canvas, "mousemove", g.left + 0.5 * g.cw, g.top + 1.5 * g.ch); // layer 1, head 0: a value
    expect(tip.textContent).toBe("layer 1, head 0: attention entropy 2 bits");

    mouse(canvas, "click", 4, g.top + 0.5 * g.ch); // click the no-attention row's label
    expect(model.get("selection")).toMatchObject({ layer: 0, head: null });
    expect(root.querySelector(".cv-heat-info")!.textContent).toContain("layer 0: no attention");
    mouse(canvas, "click", g.left + 2.5 * g.cw, g.top + 0.5 * g.ch); // a cell of it
    expect(model.get("selection")).toMatchObject({ layer: 0, head: 2 });
  });

  it("draws an ordinary trace without any no-attention mark", () => {
    const { el } = mount("heatmap", { data: dv(samplePayload()) });
    const root = el.querySelector(".cv-heatmap") as HTMLElement;
    expect(root.dataset.noAttention).toBe("");
    expect(root.querySelector(".cv-heat-noattn")).toBeNull();
  });
});

describe("attention graph of a hybrid stack", () => {
  it("says the selected layer has no softmax attention instead of an empty picture", () => {
    const { el, model } = mount("graph", { selection: { step: 0, token: 2, layer: 0, head: 0, metric: "entropy" } });
    const root = el.querySelector(".cv-graph") as HTMLElement;
    const info = root.querySelector(".cv-graph-info")!;
    expect(root.dataset.state).toBe("no_attention");
    expect(info.textContent).toContain("layer 0 has no softmax attention");
    expect(root.querySelectorAll(".cv-key")).toHaveLength(0);
    const options = Array.from(root.querySelectorAll(".cv-graph-layer option")).map((o) => o.textContent);
    expect(options).toEqual(["all", "0 (no attention)", "1"]);
    model.set("edges", dv(noAttentionEdges(2, 0, 0))); // the kernel's answer changes nothing
    expect(info.textContent).toContain("layer 0 has no softmax attention");

    // a layer with attention draws as before; "all" says it averages the attention layers only
    const layerSel = root.querySelector(".cv-graph-layer") as HTMLSelectElement;
    layerSel.value = "1";
    layerSel.dispatchEvent(new Event("change"));
    expect(model.get("selection")).toMatchObject({ layer: 1 });
    model.set("selection", { ...model.get("selection"), head: null });
    model.set("edges", dv(edgesPayload(2, 1, null, [0, 2], [0.7, 0.3])));
    expect(root.dataset.state).toBe("drawn");
    expect(info.textContent).not.toContain("no softmax attention");
    model.set("selection", { ...model.get("selection"), layer: null });
    expect(info.textContent).toContain("mean over the 1 attention layers");
  });

  it("trusts the kernel's no_attention answer when the trace meta does not list the layers", () => {
    const { el, model } = mount("graph", {
      data: dv(hybridPayload({})),
      selection: { step: 0, token: 1, layer: 0, head: null, metric: "entropy" },
    });
    const root = el.querySelector(".cv-graph") as HTMLElement;
    expect(root.dataset.state).toBe("stale");
    model.set("edges", dv(noAttentionEdges(1, 0, null)));
    expect(root.dataset.state).toBe("no_attention");
    expect(root.querySelector(".cv-graph-info")!.textContent).toContain("layer 0 has no softmax attention");
  });
});

describe("dashboard of a hybrid stack", () => {
  it("a click on a no-attention row of the heatmap moves the graph to that layer's message", () => {
    const { el, model } = mount("dashboard", { selection: { step: 0, token: 3, layer: null, head: null, metric: "entropy" } });
    const canvas = el.querySelector(".cv-heatmap canvas") as HTMLCanvasElement;
    const g = heatLayout(2, 3, 420);
    mouse(canvas, "click", 4, g.top + 0.5 * g.ch);
    expect(model.get("selection")).toMatchObject({ layer: 0, head: null, token: 3 });
    expect((el.querySelector(".cv-graph") as HTMLElement).dataset.state).toBe("no_attention");
    expect(el.querySelector(".cv-graph-info")!.textContent).toContain("layer 0 has no softmax attention");
  });
});
