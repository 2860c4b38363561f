/** Test helpers: a payload encoder (the layout of payload.py) and an in-memory anywidget model. */
import type { AnyModel } from "@anywidget/types";
import { vi } from "vitest";
import { render } from "../src/render";
import { DEFAULT_OPTIONS } from "../src/store";

type Num = { dtype: "f4" | "i4" | "f2" | "u1"; shape: number[]; values: number[] };

export function encodePayload(meta: Record<string, any>, arrays: Record<string, Num | string[]>): Uint8Array {
  const enc = new TextEncoder();
  const entries: any[] = [];
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, v] of Object.entries(arrays)) {
    let raw: Uint8Array, dtype: string, shape: number[];
    if (Array.isArray(v)) {
      const parts = v.map((s) => enc.encode(s));
      const offs = new Uint32Array(parts.length + 1);
      parts.forEach((p, i) => (offs[i + 1] = offs[i] + p.length));
      raw = new Uint8Array(offs.byteLength + offs[parts.length]);
      raw.set(new Uint8Array(offs.buffer), 0);
      let o = offs.byteLength;
      for (const p of parts) { raw.set(p, o); o += p.length; }
      dtype = "str"; shape = [v.length];
    } else {
      const Ctor = v.dtype === "f4" ? Float32Array : v.dtype === "i4" ? Int32Array : Uint8Array;
      if (v.dtype === "f2") throw new Error("f2 not supported by the test encoder");
      raw = new Uint8Array(new Ctor(v.values).buffer);
      dtype = v.dtype; shape = v.shape;
    }
    entries.push({ name, dtype, shape, offset, nbytes: raw.length });
    const pad = (8 - (raw.length % 8)) % 8;
    const padded = new Uint8Array(raw.length + pad);
    padded.set(raw);
    chunks.push(padded);
    offset += padded.length;
  }
  const header = enc.encode(JSON.stringify({ version: 1, meta, arrays: entries }));
  const headLen = 8 + header.length;
  const start = headLen + ((8 - (headLen % 8)) % 8);
  const out = new Uint8Array(start + offset);
  out.set([0x43, 0x56, 0x57, 0x31]);
  new DataView(out.buffer).setUint32(4, header.length, true);
  out.set(header, 8);
  let o = start;
  for (const c of chunks) { out.set(c, o); o += c.length; }
  return out;
}

export function fakeModel(state: Record<string, any>): AnyModel & {
  saves: number; state: Record<string, any>; sent: unknown[]; emit: (e: string, ...a: unknown[]) => void;
} {
  const listeners = new Map<string, Array<(...a: any[]) => void>>();
  const m: any = {
    state, saves: 0, sent: [],
    emit: (e: string, ...a: unknown[]) => { for (const f of listeners.get(e) ?? []) f(...a); },
    get: (k: string) => state[k],
    set: (k: string, v: any) => { state[k] = v; for (const f of listeners.get(`change:${k}`) ?? []) f(); },
    on: (e: string, f: () => void) => { listeners.set(e, [...(listeners.get(e) ?? []), f]); },
    off: (e: string, f: () => void) => { listeners.set(e, (listeners.get(e) ?? []).filter((g) => g !== f)); },
    save_changes: () => { m.saves++; },
    send: (msg: unknown) => { m.sent.push(msg); }, widget_manager: {},
  };
  return m;
}

export const f4 = (shape: number[], values: number[]): Num => ({ dtype: "f4", shape, values });

/** A small trace payload: P=4 prompt tokens, T=3 steps, L=2 layers, H=3 heads, K=2. */
export function samplePayload(metaOverrides: Record<string, any> = {}, extraArrays: Record<string, Num | string[]> = {}): Uint8Array {
  const L = 2, H = 3, T = 3;
  const headEnt = Array.from({ length: T * L * H }, (_, i) => ((i % 7) + 1) * 0.5);
  headEnt[1] = 0.05; // step 0, layer 0, head 1 collapsed
  const headConc = Array.from({ length: T * L * H }, (_, i) => (i % 5) * 0.2);
  headConc[4] = 0.95; // step 0, layer 1, head 1 focused
  return encodePayload(
    {
      model_name: "tiny", n_prompt: 4, n_steps: T, n_layers: L, n_heads: H, top_k: 2,
      thresholds: { collapsed_entropy_bits: 0.1, focused_concentration: 0.9, high_entropy_bits: 4 },
      health: {
        nan_detected: false, inf_detected: false, attention_collapse_detected: true, high_entropy_steps: 1,
        repetition_loop_detected: false, mid_layer_anomaly_detected: false, verdict: "yellow",
        first_fired: { attention_collapse_detected: { step: 0, layer: 1 }, high_entropy_steps: { step: 2 } },
      },
      ...metaOverrides,
    },
    {
      prompt_tokens: ["Why", " is", " sky", " blue"],
      generated_tokens: [" It", " scatters", "."],
      generated_ids: { dtype: "i4", shape: [T], values: [11, 12, 13] },
      entropy: f4([T], [0.5, 2, 4.5]),
      surprisal: f4([T], [0.1, 3, 1]),
      top_k_margin: f4([T], [0.9, 0.2, 0.5]),
      voter_agreement: f4([T], [1, 0.8, 0.9]),
      perplexity: f4([T], [1.41, 4, 22.6]),
      max_prob: f4([T], [0.95, 0.4, 0.6]),
      top_k_ids: { dtype: "i4", shape: [T, 2], values: [11, 7, 8, 12, 13, 9] },
      top_k_probs: f4([T, 2], [0.95, 0.05, 0.45, 0.4, 0.6, 0.3]),
      top_k_tokens: [" It", " The", " bends", " scatters", ".", "!"],
      prompt_surprisal: f4([3], [5, 1, 2]),
      head_entropy: f4([T, L, H], headEnt),
      head_concentration: f4([T, L, H], headConc),
      prompt_head_entropy: f4([L, H], [1, 2, 3, 4, 5, 6]),
      prompt_head_concentration: f4([L, H], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
      prompt_sink: f4([L, H], [0.5, 0.1, 0.2, 0.3, 0.4, 0.9]),
      prompt_basin: f4([L, H], [0.2, 0.3, 1.5, 0.1, 0.5, 2]),
      ...extraArrays,
    },
  );
}

export function edgesPayload(token: number, layer: number | null, head: number | null, keys: number[], weights: number[]): Uint8Array {
  return encodePayload({ token, layer, head }, {
    out_keys: { dtype: "i4", shape: [keys.length], values: keys },
    out_weights: f4([weights.length], weights),
    in_queries: { dtype: "i4", shape: [2], values: [token, 3] },
    in_weights: f4([2], [0.3, 0.2]),
  });
}

/** The sample payload with a logit lens [T=3, L=2] (entropy = step + layer / 10; top-1 ids 11, 12, 99). */
export function lensPayload(): Uint8Array {
  return samplePayload({ has_lens: true, risk: { value: 0.8125, kind: "logistic", label: "calibrated", description: "calibrated probability of a wrong answer" } }, {
    lens_entropy: f4([3, 2], [0, 0.1, 1, 1.1, 2, 2.1]),
    lens_top1: { dtype: "i4", shape: [3, 2], values: [11, 12, 12, 12, 99, 11] },
    lens_top1_ids: { dtype: "i4", shape: [3], values: [11, 12, 99] },
    lens_top1_text: [" It", " scatters", ""],
  });
}

/** The sample payload as a hybrid stack: layer 0 is a state-space / convolution block (no softmax
 * attention: its heads are NaN at every step and in the prompt), layer 1 has attention, with one
 * NaN head (step 0, head 2) that keeps the ordinary missing-value look. */
export function hybridPayload(meta: Record<string, any> = { attention_layers: [1], prompt_attention_layers: [1] }): Uint8Array {
  const L = 2, H = 3, T = 3;
  const nanLayer0 = (vals: number[]) => vals.map((v, i) => (Math.floor(i / H) % L === 0 ? NaN : v)); // [T, L, H]
  const headEnt = nanLayer0(Array.from({ length: T * L * H }, (_, i) => ((i % 7) + 1) * 0.5));
  headEnt[1 * H + 2] = NaN;
  const headConc = nanLayer0(Array.from({ length: T * L * H }, (_, i) => (i % 5) * 0.2));
  headConc[4] = 0.95; // step 0, layer 1, head 1 focused
  return samplePayload(meta, {
    head_entropy: f4([T, L, H], headEnt),
    head_concentration: f4([T, L, H], headConc),
    prompt_head_entropy: f4([L, H], [NaN, NaN, NaN, 4, 5, 6]),
    prompt_head_concentration: f4([L, H], [NaN, NaN, NaN, 0.4, 0.5, 0.6]),
    prompt_sink: f4([L, H], [NaN, NaN, NaN, 0.3, 0.4, 0.9]),
    prompt_basin: f4([L, H], [NaN, NaN, NaN, 0.1, 0.5, 2]),
  });
}

/** An edges payload for a layer without attention, as `edges_payload` sends it. */
export function noAttentionEdges(token: number, layer: number, head: number | null): Uint8Array {
  return encodePayload({ token, layer, head, incoming: false, no_attention: true }, {
    out_keys: { dtype: "i4", shape: [0], values: [] },
    out_weights: f4([0], []),
    in_queries: { dtype: "i4", shape: [0], values: [] },
    in_weights: f4([0], []),
  });
}

/** Render a view of ``data`` into a new element of the document, with a fake model (shared by the view tests). */
export function mountView(view: string, data: Uint8Array, extra: Record<string, any> = {}) {
  const model = fakeModel({
    view, data: new DataView(data.buffer, data.byteOffset, data.byteLength), edges: new DataView(new ArrayBuffer(0)),
    selection: { step: 0, token: null, layer: null, head: null, metric: "entropy" },
    options: { ...DEFAULT_OPTIONS }, progress: { step: 3, total: 3, done: true }, live_tokens: [], ...extra,
  });
  const el = document.createElement("div");
  document.body.append(el);
  const cleanup = render({ model, el });
  mounted.push(cleanup);
  return { model, el, cleanup };
}

const mounted: Array<() => void> = [];

/** Clean up every view mountView rendered (their listeners and theme observers), as anywidget does when a view goes away. */
export function unmountAll(): void {
  for (const c of mounted.splice(0)) c();
}

export interface CanvasOp { canvas: HTMLCanvasElement; op: string; args: any[]; fillStyle: string; strokeStyle: string }

/** happy-dom has no 2-D canvas: give every canvas a recording context (each call with the fill and
 * stroke style in force), so tests can read what was drawn and in which colour. Call restore() after. */
export function recordCanvas() {
  const ops: CanvasOp[] = [];
  const spy = vi.spyOn(HTMLCanvasElement.prototype, "getContext").mockImplementation(function (this: HTMLCanvasElement) {
    const canvas = this;
    const state: Record<string, any> = { fillStyle: "#000000", strokeStyle: "#000000", lineWidth: 1, globalAlpha: 1, font: "", textAlign: "start" };
    return new Proxy(state, {
      get: (t, k: string) => (k in t ? t[k] : (...args: any[]) => { ops.push({ canvas, op: k, args, fillStyle: t.fillStyle, strokeStyle: t.strokeStyle }); }),
      set: (t, k: string, v) => { t[k] = v; return true; },
    }) as any;
  });
  /** The fill colour of the last rectangle drawn at (x, y) on a canvas. */
  const fillAt = (canvas: HTMLCanvasElement, x: number, y: number): string | undefined =>
    ops.filter((o) => o.canvas === canvas && o.op === "fillRect" && o.args[0] === x && o.args[1] === y).pop()?.fillStyle;
  /** The fill colour of the last text drawn on a canvas. */
  const textColor = (canvas: HTMLCanvasElement, text: string): string | undefined =>
    ops.filter((o) => o.canvas === canvas && o.op === "fillText" && o.args[0] === text).pop()?.fillStyle;
  return { ops, fillAt, textColor, restore: () => spy.mockRestore() };
}
