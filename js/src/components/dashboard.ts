/** The dashboard: all four views on one model, so they share one selection. */
import { h } from "../dom";
import type { Store } from "../store";
import { mountBadge } from "./badge";
import { mountGraph } from "./graph";
import { mountHeatmap } from "./heatmap";
import { mountTimeline } from "./timeline";

export function mountDashboard(el: HTMLElement, store: Store): () => void {
  const root = h("div", { class: "cv-dashboard" });
  const top = h("div", { class: "cv-slot-badge" });
  const mid = h("div", { class: "cv-slot-timeline" });
  const left = h("div", { class: "cv-slot-heatmap" });
  const right = h("div", { class: "cv-slot-graph" });
  root.append(top, mid, h("div", { class: "cv-row" }, left, right));
  el.append(root);
  const stops = [mountBadge(top, store), mountTimeline(mid, store), mountHeatmap(left, store), mountGraph(right, store)];
  return () => { stops.forEach((s) => s()); root.remove(); };
}
