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

function asDataView(v: unknown): DataView | null {
  if (!v) return null;
  if (v instanceof DataView) return v.byteLength ? v : null;
  if (v instanceof ArrayBuffer) return v.byteLength ? new DataView(v) : null;
  if (ArrayBuffer.isView(v)) return v.byteLength ? new DataView(v.buffer, v.byteOffset, v.byteLength) : null;
  return null;
}

export class Store {
  readonly model: AnyModel;
  private cache = new Map<string, { src: unknown; payload: Payload | null }>();
  private subs: Array<[string, () => void]> = [];
  /** performance.now() of the last selection that needs the kernel (token/layer/head). */
  pendingSince: number | null = null;
  lastRoundTripMs: number | null = null;

  constructor(model: AnyModel) {
    this.model = model;
  }

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
  /** The sparse-query result for the current token/layer/head (computed in the kernel). */
  get edges(): Payload | null { return this.decoded("edges"); }

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
      this.subs.push([ev, cb]);
    }
  }

  dispose(): void {
    for (const [ev, cb] of this.subs) this.model.off(ev, cb);
    this.subs = [];
  }
}

export function now(): number {
  return typeof performance !== "undefined" ? performance.now() : Date.now();
}
