/** Health badge: the traffic-light verdict and each flag with where it first fired. */
import { h } from "../dom";
import type { Store } from "../store";

export const FLAG_LABELS: Record<string, string> = {
  nan_detected: "NaN values",
  inf_detected: "Inf values",
  attention_collapse_detected: "attention collapse",
  high_entropy_steps: "high-entropy steps",
  repetition_loop_detected: "repetition loop",
  mid_layer_anomaly_detected: "mid-layer anomaly",
};

export const VERDICT_TEXT: Record<string, string> = {
  green: "healthy", yellow: "warnings", red: "problems",
};

export interface FlagRow {
  name: string;
  label: string;
  fired: boolean;
  value: string;
  step: number | null;
  layer: number | null;
}

/** The rows the badge shows, from the payload's health dict (pure). */
export function flagRows(health: Record<string, any>): FlagRow[] {
  const first = health.first_fired ?? {};
  return Object.keys(FLAG_LABELS).filter((n) => n in health).map((name) => {
    const v = health[name];
    const at = first[name];
    const fired = typeof v === "number" ? v > 0 : Boolean(v);
    return {
      name, label: FLAG_LABELS[name], fired,
      value: typeof v === "number" ? String(v) : fired ? "yes" : "no",
      step: at ? at.step : null,
      layer: at && at.layer !== undefined && at.layer !== null ? at.layer : null,
    };
  });
}

export function whereText(r: FlagRow): string {
  if (r.step === null) return "";
  return r.layer === null ? `first at step ${r.step}` : `first at step ${r.step}, layer ${r.layer}`;
}

export function mountBadge(el: HTMLElement, store: Store): () => void {
  const root = h("div", { class: "cv-badge", tabindex: "0" });
  el.append(root);

  const draw = () => {
    root.replaceChildren();
    const p = store.data;
    if (!p) {
      root.append(h("span", { class: "cv-light cv-pending" }), h("span", { class: "cv-verdict", text: "health: pending" }));
      root.dataset.verdict = "pending";
      return;
    }
    const health = p.meta.health ?? {};
    const verdict: string = health.verdict ?? "green";
    root.dataset.verdict = verdict;
    const head = h("div", { class: "cv-badge-head" },
      h("span", { class: `cv-light cv-${verdict}`, title: verdict, role: "img", "aria-label": `verdict ${verdict}` }),
      h("span", { class: "cv-verdict", text: `${VERDICT_TEXT[verdict] ?? verdict}` }),
      h("span", { class: "cv-muted", text: p.meta.model_name ? ` · ${p.meta.model_name}` : "" }));
    const list = h("ul", { class: "cv-flags" });
    const rows = flagRows(health);
    for (const r of rows) {
      const li = h("li", { class: `cv-flag${r.fired ? " cv-fired" : ""}`, "data-flag": r.name });
      li.append(h("span", { class: "cv-flag-name", text: r.label }), h("span", { class: "cv-flag-value", text: r.value }));
      if (r.fired && r.step !== null) {
        const b = h("button", { class: "cv-flag-jump", "data-step": String(r.step), text: whereText(r) });
        if (r.layer !== null) b.dataset.layer = String(r.layer);
        b.title = "select where it first fired";
        li.append(b);
      }
      list.append(li);
    }
    root.dataset.fired = String(rows.filter((r) => r.fired).length);
    root.append(head, list);
  };

  root.addEventListener("click", (ev) => {
    const b = (ev.target as HTMLElement).closest?.(".cv-flag-jump") as HTMLElement | null;
    if (!b) return;
    const step = Number(b.dataset.step);
    const layer = b.dataset.layer !== undefined ? Number(b.dataset.layer) : store.sel.layer;
    store.select({ step, layer, head: b.dataset.layer !== undefined ? null : store.sel.head });
    if (store.opts.heat_source !== "step") store.setOptions({ heat_source: "step" });
  });

  store.on(["data"], draw);
  draw();
  return () => root.remove();
}
