/** Health badge: the traffic-light verdict and each flag with where it first fired. */
import { h } from "../dom";
import { riskColor } from "../scales";
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

export interface RiskInfo { value: number; kind: string; label: string; description: string }

/** The risk the payload carries (null when the trace could not be scored), and its display text (pure). */
export function riskInfo(meta: Record<string, any>): (RiskInfo & { text: string }) | null {
  const r = meta.risk;
  if (!r || typeof r.value !== "number" || !Number.isFinite(r.value)) return null;
  const label = String(r.label ?? (r.kind === "heuristic" ? "uncalibrated heuristic" : "calibrated"));
  return { value: r.value, kind: String(r.kind ?? ""), label, description: String(r.description ?? ""), text: r.value.toFixed(2) };
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
    const risk = riskInfo(p.meta);
    if (risk) {
      const span = h("span", { class: `cv-risk cv-risk-${risk.kind}`, "data-risk": String(risk.value), "data-kind": risk.kind,
        title: `${risk.description || "risk of a wrong answer"}: ${risk.value.toFixed(4)}` },
      `risk ${risk.text} `, h("span", { class: "cv-risk-kind", text: `(${risk.label})` }));
      span.style.background = riskColor(risk.value);
      head.append(span);
    }
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
    if (store.opts.heat_source === "prompt") store.setOptions({ heat_source: "step" }); // the lens view shows steps too
  });

  store.on(["data"], draw);
  draw();
  return () => root.remove();
}
