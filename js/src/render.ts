/** The widget's render: one module, the view chosen by the model's `view` trait. Tests import it from
 * here; the anywidget entry point (index.ts) only default-exports `{ render }`, so the bundle has no
 * named `render` export (anywidget >= 0.9 warns about one on every render). */
import type { AnyModel } from "@anywidget/types";
import { mountBadge } from "./components/badge";
import { COMPARE_CSS, mountCompare } from "./components/compare";
import { mountDashboard } from "./components/dashboard";
import { mountDataset } from "./components/dataset";
import { EXPLORER_CSS, mountExplorer } from "./components/explorer";
import { mountGraph } from "./components/graph";
import { mountHeatmap } from "./components/heatmap";
import { mountTimeline } from "./components/timeline";
import { Store } from "./store";
import { CSS } from "./styles";

export const VIEWS: Record<string, (el: HTMLElement, store: Store) => () => void> = {
  dashboard: mountDashboard, badge: mountBadge, timeline: mountTimeline, heatmap: mountHeatmap, graph: mountGraph,
  dataset: mountDataset, compare: mountCompare, explorer: mountExplorer,
};

/** Hide this view's static face (the picture Python displays before the widget, for readers
 * without widgets: see widgets/static_face.py) now that the live view runs. A style rule, not a
 * one-off DOM change, so it also holds for a face Python updates later (update_display) and for
 * the whole output box around it (JupyterLab / Notebook 7 / nbconvert pages, classic notebook). */
export function hideFace(faceId: string, doc: Document | null): void {
  if (!doc || !/^[0-9a-f]{8,64}$/.test(faceId) || doc.getElementById(`cv-face-hide-${faceId}`)) return;
  const cls = `.cv-face-${faceId}`;
  const rule = doc.createElement("style");
  rule.id = `cv-face-hide-${faceId}`;
  rule.textContent = `${cls}, .jp-OutputArea-child:has(${cls}), .output_area:has(${cls}) { display: none !important; }`;
  (doc.head ?? doc.documentElement).append(rule);
}

/** Render one view into `el`; returns the cleanup anywidget calls when the view goes away. */
export function render({ model, el }: { model: AnyModel; el: HTMLElement }): () => void {
  const store = new Store(model);
  const view = String(model.get("view") || "dashboard");
  el.classList.add("cv-root", `cv-view-${view}`);
  const style = document.createElement("style");
  style.textContent = CSS + COMPARE_CSS + EXPLORER_CSS;
  el.append(style);
  const unmount = (VIEWS[view] ?? mountDashboard)(el, store);
  el.dataset.ready = "1";
  hideFace(String(model.get("face_id") ?? ""), el.ownerDocument);
  return () => { unmount(); store.dispose(); style.remove(); };
}
