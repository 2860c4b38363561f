/** The shared selection and the decoded data of one widget model (anywidget front-end API only). */
import type { AnyModel } from "@anywidget/types";
import { decodePayload, type Payload } from "./payload";

export interface Selection {
  step: number | null;
  token: number | null;
  layer: number | null;
  head: number | null;
  metric: string;
}

export interface ViewOptions {
  /** "lens": the logit-lens entropy, layers x steps (only for traces made with logit_lens=True). */
  heat_source: "step" | "prompt" | "lens";
  heat_value: "entropy" | "concentration" | "sink" | "basin";
  /** "z": colour each head by its z-score against the model's baseline (payloads with `z_*` arrays only). */
  heat_color: "value" | "z";
  threshold: number;
  incoming: boolean;
}

export const DEFAULT_SELECTION: Selection = { step: null, token: null, layer: null, head: null, metric: "entropy" };
export const DEFAULT_OPTIONS: ViewOptions = { heat_source: "step", heat_value: "entropy", heat_color: "value", threshold: 0.02, incoming: false };

export interface Progress { step: number; total: number; done: boolean; phase?: string; layer?: number; layers?: number }
/** `progress.phase` while the prompt pass runs (Python's PROMPT_PHASE). */
export const PROMPT_PHASE = "reading the prompt";
/** `progress.phase` after a kernel interrupt (Python's INTERRUPTED_PHASE): no trace will come. */
export const INTERRUPTED_PHASE = "interrupted";

function asDataView(v: unknown): DataView | null {
  if (!v) return null;
  if (v instanceof DataView) return v.byteLength ? v : null;
  if (v instanceof ArrayBuffer) return v.byteLength ? new DataView(v) : null;
  if (ArrayBuffer.isView(v)) return v.byteLength ? new DataView(v.buffer, v.byteOffset, v.byteLength) : null;
  return null;
}

/** Whether a kernel holds this view: "live" (it answered), "silent" (no answer to the ping within
 * KERNEL_PING_MS: a view restored from saved widget state without its kernel, a page made by
 * nbconvert, or a kernel busy running a cell), "static" (an export_html page), "unknown" (asking). */
export type KernelState = "unknown" | "live" | "silent" | "static";
export const KERNEL_PING_MS = 600;

/** Key of a sparse query (token, layer, head) in the store's answer cache. */
export function edgesKey(token: number | null, layer: number | null, head: number | null): string {
  return `${token}|${layer}|${head}`;
}

export class Store {
  readonly model: AnyModel;
  private cache = new Map<string, { src: unknown; payload: Payload | null }>();
  private subs: Array<[string, () => void]> = [];
  /** Every edges answer this page has seen (the saved one included), by query: served again
   * without the kernel, and what a kernel-less view still holds. */
  private held = new Map<string, Payload>();
  kernel: KernelState = "unknown";
  private kernelSubs: Array<() => void> = [];
  private pingTimer: ReturnType<typeof setTimeout> | null = null;
  private onMsg = (msg: unknown) => {
    if (msg && typeof msg === "object" && (msg as { type?: string }).type === "pong") this.setKernel("live");
  };
  /** performance.now() of the last selection that needs the kernel (token/layer/head). */
  pendingSince: number | null = null;
  lastRoundTripMs: number | null = null;

  constructor(model: AnyModel) {
    this.model = model;
    if (model.get("_static")) { this.kernel = "static"; return; }
    model.on("msg:custom", this.onMsg);
    try {
      model.send({ type: "ping" });
    } catch { this.kernel = "silent"; return; }
    this.pingTimer = setTimeout(() => { this.pingTimer = null; if (this.kernel === "unknown") this.setKernel("silent"); }, KERNEL_PING_MS);
  }

  private setKernel(k: KernelState): void {
    if (this.kernel === k) return;
    this.kernel = k;
    for (const cb of this.kernelSubs) cb();
  }

  /** Call ``cb`` when the kernel state changes (a view redraws its waiting text). */
  onKernel(cb: () => void): void { this.kernelSubs.push(cb); }

  private decoded(name: string): Payload | null {
    const src = this.model.get(name);
    const hit = this.cache.get(name);
    if (hit && hit.src === src) return hit.payload;
    const dv = asDataView(src);
    const payload = dv ? decodePayload(dv) : null;
    this.cache.set(name, { src, payload });
    return payload;
  }

  /** The trace payload (null while generation runs). */
  get data(): Payload | null { return this.decoded("data"); }
  /** The sparse-query result last sent by the kernel (or saved with the widget state). */
  get edges(): Payload | null {
    const e = this.decoded("edges");
    if (e) {
      const m = e.meta;
      this.held.set(edgesKey(m.token ?? null, m.layer ?? null, m.head ?? null), e);
    }
    return e;
  }

  /** The answer for (token, layer, head): the kernel's latest if it matches, else one held from
   * earlier in this page (null when none: the kernel must be asked). */
  edgesFor(token: number | null, layer: number | null, head: number | null): Payload | null {
    const e = this.edges;
    if (e && e.meta.token === token && (e.meta.layer ?? null) === layer && (e.meta.head ?? null) === head) return e;
    return this.held.get(edgesKey(token, layer, head)) ?? null;
  }

  /** Tokens whose edges this view holds for (layer, head), ascending. */
  heldTokens(layer: number | null, head: number | null): number[] {
    void this.edges;
    const out: number[] = [];
    for (const e of this.held.values()) if ((e.meta.layer ?? null) === layer && (e.meta.head ?? null) === head) out.push(e.meta.token);
    return out.sort((a, b) => a - b);
  }

  /** Why the view cannot show the answer to (token, layer, head) yet, in words. */
  waitingText(layer: number | null, head: number | null): string {
    if (this.kernel === "live" || this.kernel === "unknown") return "waiting for the kernel…";
    const held = this.heldTokens(layer, head);
    const what = held.length ? `it holds the edges of token${held.length > 1 ? "s" : ""} ${held.slice(0, 5).join(", ")}${held.length > 5 ? "…" : ""} for this layer/head`
      : "it holds no edges for this layer/head";
    if (this.kernel === "static") return `this static page holds the edges of the exported selection only (${what}; run the notebook for others)`;
    return `no kernel answers this view (restored from saved widget state without its kernel, or the kernel is busy): ${what}; re-run the cell to query other tokens`;
  }
  get sel(): Selection { return { ...DEFAULT_SELECTION, ...(this.model.get("selection") ?? {}) }; }
  get opts(): ViewOptions { return { ...DEFAULT_OPTIONS, ...(this.model.get("options") ?? {}) }; }
  get progress(): Progress | null { return this.model.get("progress") || null; }
  get liveTokens(): string[] { return this.model.get("live_tokens") ?? []; }

  select(patch: Partial<Selection>): void {
    const cur = this.sel;
    const next = { ...cur, ...patch };
    if ((Object.keys(next) as (keyof Selection)[]).every((k) => next[k] === cur[k])) return;
    if (next.token !== cur.token || next.layer !== cur.layer || next.head !== cur.head) this.pendingSince = now();
    this.model.set("selection", next);
    this.save();
  }

  setOptions(patch: Partial<ViewOptions>): void {
    this.model.set("options", { ...this.opts, ...patch });
    this.save();
  }

  private save(): void {
    try { this.model.save_changes(); } catch { /* no kernel (static HTML): the change stays local */ }
  }

  on(names: string[], cb: () => void): void {
    for (const n of names) {
      const ev = `change:${n}`;
      this.model.on(ev, cb);
      if (n === "edges") {
        // an answer arrived: a kernel holds this view
        const alive = () => { if (this.kernel !== "static") this.setKernel("live"); };
        this.model.on(ev, alive);
        this.subs.push([ev, alive]);
      }
      this.subs.push([ev, cb]);
    }
  }

  dispose(): void {
    for (const [ev, cb] of this.subs) this.model.off(ev, cb);
    this.subs = [];
    this.model.off("msg:custom", this.onMsg);
    if (this.pingTimer !== null) clearTimeout(this.pingTimer);
    this.kernelSubs = [];
  }
}

export function now(): number {
  return typeof performance !== "undefined" ? performance.now() : Date.now();
}
