/** The widget's render: one module, the view chosen by the model's `view` trait. Tests import it from
 * here; the anywidget entry point (index.ts) only default-exports `{ render }`, so the bundle has no
 * named `render` export (anywidget >= 0.9 warns about one on every render). */
import type { AnyModel } from "@anywidget/types";
import { mountBadge } from "./components/badge";
import { mountDashboard } from "./components/dashboard";
import { mountDataset } from "./components/dataset";
import { mountGraph } from "./components/graph";
import { mountHeatmap } from "./components/heatmap";
import { mountTimeline } from "./components/timeline";
import { Store } from "./store";
import { CSS } from "./styles";

export const VIEWS: Record<string, (el: HTMLElement, store: Store) => () => void> = {
  dashboard: mountDashboard, badge: mountBadge, timeline: mountTimeline, heatmap: mountHeatmap, graph: mountGraph,
  dataset: mountDataset,
};

/** Render one view into `el`; returns the cleanup anywidget calls when the view goes away. */
export function render({ model, el }: { model: AnyModel; el: HTMLElement }): () => void {
  const store = new Store(model);
  const view = String(model.get("view") || "dashboard");
  el.classList.add("cv-root", `cv-view-${view}`);
  const style = document.createElement("style");
  style.textContent = CSS;
  el.append(style);
  const unmount = (VIEWS[view] ?? mountDashboard)(el, store);
  el.dataset.ready = "1";
  return () => { unmount(); store.dispose(); style.remove(); };
}
