/** Health badge: the traffic-light verdict (against the model's own normal), its sentence,
 * narrative and layer blame, and the health flags as facts with where each first fired. */
import { h } from "../dom";
import { fmt, riskColor } from "../scales";
import { INTERRUPTED_PHASE, type Selection, type Store, type ViewOptions } from "../store";

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

/** What each colour of the light means (its tooltip). */
export const COLOR_MEANING: Record<string, string> = {
  green: "green: nothing unusual",
  yellow: "yellow: unusual for this model compared with its normal",
  red: "red: the numbers went wrong (NaN/Inf, a mid-layer anomaly or a repetition loop)",
};

export interface BlameReason {
  statistic: string; heads: number[]; z: number | null; value: number | null; normal: number | null; scale: number | null;
  first_step: number | null; text: string;
}
export interface BlameEntry { layer: number | null; severity: number | null; text: string; reasons: BlameReason[] }

/** The verdict the badge shows (pure): `meta.verdict` (assess() in Python), or for an old payload
 * without it the absolute-rules colour of `meta.health.verdict` with its old words. */
export interface VerdictInfo {
  color: string;
  sentence: string;
  /** The narrative without its leading sentence (the badge shows the sentence just above). */
  narrative: string;
  blame: BlameEntry[];
  baseline: string | null;
  alpha: number | null;
  /** Python's Verdict.calibration: what the colour is judged against and how often a healthy run alarms. */
  calibration: string | null;
  /** False for an old payload (no `meta.verdict`). */
  assessed: boolean;
}

export function verdictInfo(meta: Record<string, any>): VerdictInfo {
  const v = meta.verdict;
  if (!v || typeof v !== "object" || typeof v.color !== "string") {
    const color = String(meta.health?.verdict ?? "green");
    return { color, sentence: VERDICT_TEXT[color] ?? color, narrative: "", blame: [], baseline: null, alpha: null, calibration: null,
      assessed: false };
  }
  const sentence = String(v.sentence ?? "");
  let narrative = String(v.narrative ?? "");
  if (sentence && narrative.startsWith(sentence)) narrative = narrative.slice(sentence.length).trim();
  const alpha = typeof v.alpha === "number" && Number.isFinite(v.alpha) ? v.alpha : null;
  return {
    color: v.color, sentence: sentence || (VERDICT_TEXT[v.color] ?? v.color), narrative,
    blame: Array.isArray(v.blame) ? v.blame : [], baseline: v.baseline ?? null, alpha,
    calibration: typeof v.calibration === "string" && v.calibration ? v.calibration : null, assessed: true,
  };
}

/** Tooltip of the light: what its colour means, and how often a healthy run alarms (pure). */
export function lightTitle(v: VerdictInfo): string {
  const meaning = COLOR_MEANING[v.color] ?? v.color;
  if (!v.assessed) return `${meaning} (absolute health rules; this payload carries no verdict against the model's normal)`;
  if (v.calibration) return `${meaning}. ${v.calibration}`;
  if (v.alpha !== null) {
    return `${meaning}. Judged against the ${v.baseline ?? "baseline of this model"}: ` +
      `a healthy run of this model alarms with probability ${fmt(v.alpha * 100)}%`;
  }
  return `${meaning}; no baseline for this model, so nothing is judged unusual for it: only numeric faults ` +
    "(NaN/Inf, a mid-layer anomaly, a repetition loop) turn it red";
}

/** Display text of a blame entry, as Python's LayerBlame.text() writes it (pure). */
export function blameText(b: BlameEntry): string {
  if (b.text) return b.text;
  const where = b.layer === null || b.layer === undefined ? "the run" : `layer ${b.layer}`;
  const sev = typeof b.severity === "number" ? b.severity.toFixed(1) : "–";
  return `${where} (severity ${sev}): ` + (b.reasons ?? []).slice(0, 3).map((r) => r.text).join("; ");
}

/** Where a click on a blame entry goes: its layer and the first blamed head, and for per-head
 * statistics the heatmap source and value that show them (pure; null for the run as a whole). */
export function blameTarget(b: BlameEntry): { layer: number; head: number | null; step: number | null;
  source: "step" | "prompt" | null; value: "entropy" | "concentration" | "sink" | "basin" | null } | null {
  if (b.layer === null || b.layer === undefined) return null;
  const r = (b.reasons ?? [])[0];
  const head = r && Array.isArray(r.heads) && r.heads.length ? r.heads[0] : null;
  const stat = r ? String(r.statistic) : "";
  const VALUES: Record<string, "entropy" | "concentration" | "sink" | "basin"> = {
    step_entropy: "entropy", step_concentration: "concentration", prompt_entropy: "entropy",
    prompt_concentration: "concentration", prompt_sink: "sink", prompt_log_basin: "basin",
  };
  const value = VALUES[stat] ?? null;
  const source = value === null ? null : stat.startsWith("prompt_") ? "prompt" : "step";
  const step = source === "step" && r && typeof r.first_step === "number" ? r.first_step : null;
  return { layer: b.layer, head, step, source, value };
}

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
      // no trace: still running, or never coming (failed / interrupted: say so, not "pending" forever)
      const phase = store.progress?.phase;
      const over = phase === "failed" || phase === INTERRUPTED_PHASE;
      root.append(h("span", { class: "cv-light cv-pending" }),
        h("span", { class: "cv-verdict", text: over ? `health: no trace (${phase})` : "health: pending" }));
      root.dataset.verdict = over ? "none" : "pending";
      return;
    }
    const health = p.meta.health ?? {};
    const v = verdictInfo(p.meta);
    const verdict = v.color;
    root.dataset.verdict = verdict;
    root.dataset.assessed = String(v.assessed);
    const title = lightTitle(v);
    const head = h("div", { class: "cv-badge-head" },
      h("span", { class: `cv-light cv-${verdict}`, title, role: "img", "aria-label": `verdict ${verdict}: ${title}` }),
      h("span", { class: "cv-verdict", text: v.sentence }),
      h("span", { class: "cv-muted", text: p.meta.model_name ? ` · ${p.meta.model_name}` : "" }));
    const risk = riskInfo(p.meta);
    if (risk) {
      const span = h("span", { class: `cv-risk cv-risk-${risk.kind}`, "data-risk": String(risk.value), "data-kind": risk.kind,
        title: `${risk.description || "risk of a wrong answer"}: ${risk.value.toFixed(4)}` },
      `risk ${risk.text} `, h("span", { class: "cv-risk-kind", text: `(${risk.label})` }));
      span.style.background = riskColor(risk.value);
      head.append(span);
    } else if (p.meta.risk && p.meta.risk.value == null && p.meta.risk.description) {
      // outside the range the risk model was calibrated on: no number, the reason on hover
      head.append(h("span", { class: "cv-risk cv-risk-withheld", "data-kind": String(p.meta.risk.kind),
        title: String(p.meta.risk.description), text: "risk: not shown (outside its calibration)" }));
    }
    root.append(head);
    if (v.narrative) root.append(h("div", { class: "cv-narrative cv-muted", text: v.narrative }));
    const blame = v.blame.slice(0, 3);
    root.dataset.blame = String(v.blame.length);
    if (blame.length) {
      const ul = h("ul", { class: "cv-blame" });
      for (const b of blame) {
        const t = blameTarget(b);
        const li = h("li", { class: "cv-blame-entry" });
        if (t) {
          const btn = h("button", { class: "cv-blame-jump", "data-layer": String(t.layer), text: blameText(b),
            title: `select layer ${t.layer}${t.head !== null ? `, head ${t.head}` : ""}` });
          if (t.head !== null) btn.dataset.head = String(t.head);
          if (t.step !== null) btn.dataset.step = String(t.step);
          if (t.source) btn.dataset.source = t.source;
          if (t.value) btn.dataset.value = t.value;
          li.append(btn);
        } else {
          li.append(h("span", { class: "cv-blame-run", text: blameText(b) }));
        }
        ul.append(li);
      }
      if (v.blame.length > blame.length) ul.append(h("li", { class: "cv-muted", text: `+${v.blame.length - blame.length} more (trace.verdict().blame)` }));
      root.append(ul);
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
    root.append(h("div", { class: "cv-facts" }, h("span", { class: "cv-facts-title", text: "facts" }), list));
  };

  root.addEventListener("click", (ev) => {
    const blamed = (ev.target as HTMLElement).closest?.(".cv-blame-jump") as HTMLElement | null;
    if (blamed) {
      const d = blamed.dataset;
      const patch: Partial<Selection> = { layer: Number(d.layer), head: d.head !== undefined ? Number(d.head) : null };
      if (d.step !== undefined) patch.step = Number(d.step);
      store.select(patch);
      if (d.source) store.setOptions({ heat_source: d.source as ViewOptions["heat_source"], heat_value: d.value as ViewOptions["heat_value"] });
      return;
    }
    const b = (ev.target as HTMLElement).closest?.(".cv-flag-jump") as HTMLElement | null;
    if (!b) return;
    const step = Number(b.dataset.step);
    const layer = b.dataset.layer !== undefined ? Number(b.dataset.layer) : store.sel.layer;
    store.select({ step, layer, head: b.dataset.layer !== undefined ? null : store.sel.head });
    if (store.opts.heat_source === "prompt") store.setOptions({ heat_source: "step" }); // the lens view shows steps too
  });

  store.on(["data", "progress"], draw);
  draw();
  return () => root.remove();
}
