/**
 * Dataset view: a table of the prompts of a TraceSet (sortable, filterable) and, below it, the
 * dashboard of the clicked row. The rows come as JSON columns (`rows` trait); a click sets the
 * `row` trait and the kernel answers by sending that trace's payload (`data`) on this model, which
 * the dashboard below renders. Sort and filter state is the synced `table` trait.
 */
import { h } from "../dom";
import { fmt, riskColor } from "../scales";
import type { Store } from "../store";
import { mountDashboard } from "./dashboard";

export interface DatasetRow {
  i: number;
  prompt: string;
  answer: string;
  expected: string | null;
  correct: boolean | null;
  risk: number | null;
  /** The risk exists but is not shown: this run lies outside the range the risk model was calibrated on. */
  riskWithheld: boolean;
  verdict: string;
  tokens: number;
  entropy: number | null;
}

export type CorrectFilter = "all" | "correct" | "incorrect" | "ungraded";
export type VerdictFilter = "all" | "green" | "yellow" | "red";
export type ColumnKey = "index" | "prompt" | "answer" | "expected" | "correct" | "risk" | "verdict" | "tokens" | "entropy";

export interface TableState {
  sort: ColumnKey;
  desc: boolean;
  query: string;
  correct: CorrectFilter;
  verdict: VerdictFilter;
  min_risk: number;
}

/** Why a risk cell reads "n/s" (not shown). */
export const WITHHELD_TITLE = "not shown: this run lies outside the range the risk model was calibrated on, where its number " +
  "would be an extrapolation; fit corevital.RiskModel on your own labelled answers for runs like this";

export const DEFAULT_TABLE: TableState = { sort: "index", desc: false, query: "", correct: "all", verdict: "all", min_risk: 0 };

export interface ColumnDef { key: ColumnKey; label: string; title: string; numeric: boolean; firstDesc: boolean }

export const COLUMNS: ColumnDef[] = [
  { key: "index", label: "#", title: "position in the TraceSet", numeric: true, firstDesc: false },
  { key: "prompt", label: "prompt", title: "the question (last user turn of the chat template)", numeric: false, firstDesc: false },
  { key: "answer", label: "answer", title: "generated text", numeric: false, firstDesc: false },
  { key: "expected", label: "expected", title: "the known answer", numeric: false, firstDesc: false },
  { key: "correct", label: "correct", title: "graded answer: ✓ correct, ✗ wrong", numeric: false, firstDesc: false },
  { key: "risk", label: "risk", title: "risk of a wrong answer", numeric: true, firstDesc: true },
  { key: "verdict", label: "verdict", title: "health verdict", numeric: false, firstDesc: true },
  { key: "tokens", label: "steps", title: "generated tokens", numeric: true, firstDesc: true },
  { key: "entropy", label: "entropy", title: "mean token entropy, bits", numeric: true, firstDesc: true },
];

const VERDICT_ORDER: Record<string, number> = { green: 0, yellow: 1, red: 2 };

/** The `rows` trait (one list per column) as row objects (pure). */
export function toRows(cols: Record<string, any[]> | null | undefined): DatasetRow[] {
  if (!cols || !Array.isArray(cols.prompt)) return [];
  const n = cols.prompt.length;
  const get = (k: string, i: number, d: any) => (Array.isArray(cols[k]) && cols[k][i] !== undefined ? cols[k][i] : d);
  const out: DatasetRow[] = new Array(n);
  for (let i = 0; i < n; i++) {
    out[i] = {
      i, prompt: String(get("prompt", i, "")), answer: String(get("answer", i, "")), expected: get("expected", i, null),
      correct: get("correct", i, null), risk: get("risk", i, null),
      riskWithheld: get("risk_withheld", i, false) === true, verdict: String(get("verdict", i, "")),
      tokens: Number(get("tokens", i, 0)), entropy: get("entropy", i, null),
    };
  }
  return out;
}

function sortValue(r: DatasetRow, key: ColumnKey): number | string | null {
  switch (key) {
    case "index": return r.i;
    case "risk": return r.risk;
    case "tokens": return r.tokens;
    case "entropy": return r.entropy;
    case "correct": return r.correct === null ? null : r.correct ? 1 : 0;
    case "verdict": return r.verdict in VERDICT_ORDER ? VERDICT_ORDER[r.verdict] : null;
    case "expected": return r.expected === null ? null : r.expected.toLowerCase();
    default: return String(r[key]).toLowerCase();
  }
}

/** Rows ordered by a column; missing values (null, NaN) last in both directions; ties keep the TraceSet order. */
export function sortRows(rows: DatasetRow[], key: ColumnKey, desc: boolean): DatasetRow[] {
  const keyed = rows.map((r) => ({ r, v: sortValue(r, key) }));
  const missing = (v: number | string | null) => v === null || (typeof v === "number" && !Number.isFinite(v));
  keyed.sort((a, b) => {
    const ma = missing(a.v), mb = missing(b.v);
    if (ma || mb) return ma === mb ? a.r.i - b.r.i : ma ? 1 : -1;
    const c = typeof a.v === "number" && typeof b.v === "number" ? a.v - b.v : String(a.v).localeCompare(String(b.v));
    return c !== 0 ? (desc ? -c : c) : a.r.i - b.r.i;
  });
  return keyed.map((k) => k.r);
}

/** Rows passing the filters: text (case-insensitive, in prompt, answer or expected), correctness, verdict, minimum risk. */
export function filterRows(rows: DatasetRow[], state: TableState): DatasetRow[] {
  const q = state.query.trim().toLowerCase();
  const minRisk = Number(state.min_risk) || 0;
  return rows.filter((r) => {
    if (q && !(r.prompt.toLowerCase().includes(q) || r.answer.toLowerCase().includes(q) || (r.expected ?? "").toLowerCase().includes(q))) return false;
    if (state.correct === "correct" && r.correct !== true) return false;
    if (state.correct === "incorrect" && r.correct !== false) return false;
    if (state.correct === "ungraded" && r.correct !== null) return false;
    if (state.verdict !== "all" && r.verdict !== state.verdict) return false;
    if (minRisk > 0 && (r.risk === null || !(r.risk >= minRisk))) return false;
    return true;
  });
}

/** What the table shows: filtered, then sorted (pure). */
export function visibleRows(rows: DatasetRow[], state: TableState): DatasetRow[] {
  return sortRows(filterRows(rows, state), state.sort, state.desc);
}

/** The table state after a click on a column header: same column flips the direction, a new one starts at its natural direction. */
export function nextSort(state: TableState, key: ColumnKey): TableState {
  if (state.sort === key) return { ...state, desc: !state.desc };
  const def = COLUMNS.find((c) => c.key === key);
  return { ...state, sort: key, desc: def ? def.firstDesc : false };
}

/** Longest expected answer shown in full next to ✗ (longer ones are cut with "…"; the cell's title has it whole). */
export const HINT_CHARS = 24;

/** The text after ✗ for a wrong answer whose row carries the expected one: "(expected: Lima)"; null otherwise (pure). */
export function wrongHint(r: Pick<DatasetRow, "correct" | "expected">): string | null {
  if (r.correct !== false || r.expected === null || r.expected === undefined) return null;
  const e = String(r.expected).replace(/\s+/g, " ").trim();
  if (!e) return null;
  return `(expected: ${e.length > HINT_CHARS ? `${e.slice(0, HINT_CHARS - 1)}…` : e})`;
}

const PAGE = 200;

export function mountDataset(el: HTMLElement, store: Store): () => void {
  const model = store.model;
  const root = h("div", { class: "cv-dataset", tabindex: "0" });
  const query = h("input", { class: "cv-ds-query", type: "search", placeholder: "filter text…", "aria-label": "filter prompts and answers" });
  const correct = h("select", { class: "cv-ds-correct", "aria-label": "correct or incorrect" },
    ...["all", "correct", "incorrect", "ungraded"].map((v) => h("option", { value: v, text: v === "all" ? "all answers" : v })));
  const verdict = h("select", { class: "cv-ds-verdict", "aria-label": "health verdict" },
    ...["all", "green", "yellow", "red"].map((v) => h("option", { value: v, text: v === "all" ? "any verdict" : v })));
  const risk = h("input", { class: "cv-ds-risk", type: "range", min: "0", max: "1", step: "0.05", value: "0", "aria-label": "minimum risk" });
  const riskText = h("span", { class: "cv-ds-risk-text cv-muted" });
  const count = h("span", { class: "cv-ds-count cv-muted" });
  const header = h("div", { class: "cv-header" }, h("span", { class: "cv-title", text: "Prompts" }), query, correct, verdict,
    h("label", { class: "cv-ds-risk-label" }, "risk ≥ ", risk, riskText), count);
  const table = h("table", { class: "cv-ds-table" });
  const thead = h("thead");
  const tbody = h("tbody");
  table.append(thead, tbody);
  const more = h("button", { class: "cv-ds-more", hidden: "" });
  const body = h("div", { class: "cv-ds-body" }, table, more);
  const status = h("div", { class: "cv-ds-status cv-muted" });
  const dashSlot = h("div", { class: "cv-ds-dashboard", hidden: "" });
  root.append(header, body, status, dashSlot);
  el.append(root);
  const unmountDash = mountDashboard(dashSlot, store);

  let rows: DatasetRow[] = [];
  let shown: DatasetRow[] = [];
  let limit = PAGE;
  let colsMeta: Record<string, any> = {};

  const state = (): TableState => ({ ...DEFAULT_TABLE, ...(model.get("table") ?? {}) });
  const selectedRow = (): number | null => { const r = model.get("row"); return r === null || r === undefined ? null : Number(r); };
  const save = () => { try { model.save_changes(); } catch { /* static page: stays local */ } };
  const setState = (patch: Partial<TableState>) => { model.set("table", { ...state(), ...patch }); save(); };

  const columns = (): ColumnDef[] => COLUMNS.filter((c) => (c.key !== "expected" || colsMeta.has_expected) && (c.key !== "correct" || colsMeta.graded));

  const drawHead = () => {
    const st = state();
    const tr = h("tr");
    for (const c of columns()) {
      const label = c.key === "risk" && colsMeta.risk_label ? `risk (${colsMeta.risk_label})` : c.label;
      const th = h("th", { class: `cv-ds-th${c.numeric ? " cv-num" : ""}`, "data-col": c.key, title: `${c.title} · click to sort`, role: "columnheader" });
      const sorted = st.sort === c.key;
      th.setAttribute("aria-sort", sorted ? (st.desc ? "descending" : "ascending") : "none");
      th.append(h("span", { text: label }), h("span", { class: "cv-ds-arrow", text: sorted ? (st.desc ? " ▼" : " ▲") : "" }));
      tr.append(th);
    }
    thead.replaceChildren(tr);
  };

  const cell = (r: DatasetRow, c: ColumnDef): HTMLTableCellElement => {
    switch (c.key) {
      case "index": return h("td", { class: "cv-num", text: String(r.i) });
      case "prompt": return h("td", { class: "cv-ds-text", title: r.prompt, text: r.prompt });
      case "answer": return h("td", { class: "cv-ds-text cv-ds-answer", title: r.answer, text: r.answer });
      case "expected": return h("td", { class: "cv-ds-text", text: r.expected ?? "" });
      case "correct": {
        const td = h("td", {
          class: `cv-ds-correct-cell ${r.correct === null ? "cv-muted" : r.correct ? "cv-ok" : "cv-wrong"}`,
          text: r.correct === null ? "–" : r.correct ? "✓" : "✗", title: r.correct === null ? "ungraded" : r.correct ? "correct" : "wrong",
        });
        const hint = wrongHint(r);
        if (hint) { // a wrong answer says what was expected, right there (the full text on hover)
          td.append(h("span", { class: "cv-ds-expected-hint", text: ` ${hint}` }));
          td.title = `wrong; expected: ${r.expected}`;
        }
        return td;
      }
      case "risk": {
        const td = h("td", { class: `cv-num cv-ds-risk-cell${r.riskWithheld ? " cv-ds-risk-withheld cv-muted" : ""}`,
          text: r.risk === null ? (r.riskWithheld ? "n/s" : "–") : r.risk.toFixed(2) });
        td.style.background = riskColor(r.risk);
        if (r.risk !== null) td.title = `risk ${fmt(r.risk)}${colsMeta.risk_label ? ` (${colsMeta.risk_label})` : ""}`;
        else if (r.riskWithheld) td.title = WITHHELD_TITLE;
        return td;
      }
      case "verdict": return h("td", {}, h("span", { class: `cv-light cv-${r.verdict}`, title: r.verdict }), ` ${r.verdict}`);
      case "tokens": return h("td", { class: "cv-num", text: String(r.tokens) });
      case "entropy": return h("td", { class: "cv-num", text: r.entropy === null ? "–" : fmt(r.entropy) });
    }
  };

  const drawBody = () => {
    const st = state();
    shown = visibleRows(rows, st);
    const sel = selectedRow();
    const cols = columns();
    const frag = document.createDocumentFragment();
    for (const r of shown.slice(0, limit)) {
      const tr = h("tr", { class: `cv-ds-row${r.i === sel ? " cv-ds-selected" : ""}`, "data-row": String(r.i) });
      if (r.risk !== null) tr.dataset.risk = String(r.risk);
      if (r.i === sel) tr.setAttribute("aria-selected", "true");
      for (const c of cols) tr.append(cell(r, c));
      frag.append(tr);
    }
    tbody.replaceChildren(frag);
    const rest = shown.length - Math.min(limit, shown.length);
    more.hidden = rest <= 0;
    more.textContent = `show ${Math.min(rest, PAGE)} more (${rest} hidden)`;
    count.textContent = `${shown.length} of ${rows.length} shown`;
    root.dataset.rows = String(rows.length);
    root.dataset.shown = String(shown.length);
    root.dataset.sort = st.sort;
    root.dataset.desc = String(st.desc);
  };

  const drawControls = () => {
    const st = state();
    if (document.activeElement !== query) query.value = st.query;
    correct.value = st.correct;
    correct.hidden = !colsMeta.graded;
    verdict.value = st.verdict;
    risk.value = String(st.min_risk);
    riskText.textContent = Number(st.min_risk).toFixed(2);
  };

  const drawStatus = () => {
    const sel = selectedRow();
    const loaded = model.get("loaded_row");
    const err = String(model.get("status") ?? "");
    root.dataset.selected = sel === null ? "" : String(sel);
    root.dataset.loaded = loaded === null || loaded === undefined ? "" : String(loaded);
    const hasTrace = store.data !== null && loaded !== null && loaded !== undefined;
    dashSlot.hidden = !hasTrace;
    status.classList.toggle("cv-ds-error", Boolean(err));
    if (err) status.textContent = err;
    else if (sel === null) status.textContent = rows.length ? "Click a row to open its trace below." : "No prompts.";
    else if (loaded !== sel) status.textContent = `Loading the trace of row ${sel}… (needs the running kernel)`;
    else {
      const r = rows[sel];
      status.textContent = r ? `Row ${sel}: ${r.prompt}` : `Row ${sel}`;
    }
  };

  const drawAll = () => {
    rows = toRows(model.get("rows"));
    colsMeta = model.get("columns") ?? {};
    drawControls();
    drawHead();
    drawBody();
    drawStatus();
  };

  const pick = (i: number) => {
    if (selectedRow() === i) return;
    model.set("row", i);
    save();
  };

  thead.addEventListener("click", (ev) => {
    const th = (ev.target as HTMLElement).closest?.("th") as HTMLElement | null;
    if (!th || !th.dataset.col) return;
    setState(nextSort(state(), th.dataset.col as ColumnKey));
  });
  tbody.addEventListener("click", (ev) => {
    const tr = (ev.target as HTMLElement).closest?.("tr") as HTMLElement | null;
    if (tr && tr.dataset.row !== undefined) pick(Number(tr.dataset.row));
  });
  root.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement) return;
    if (dashSlot.contains(ev.target as Node)) return;
    if (ev.key !== "ArrowDown" && ev.key !== "ArrowUp") return;
    const visible = shown.slice(0, limit);
    if (!visible.length) return;
    const at = visible.findIndex((r) => r.i === selectedRow());
    const next = at < 0 ? 0 : Math.min(visible.length - 1, Math.max(0, at + (ev.key === "ArrowDown" ? 1 : -1)));
    pick(visible[next].i);
    tbody.querySelector(`tr[data-row='${visible[next].i}']`)?.scrollIntoView?.({ block: "nearest" });
    ev.preventDefault();
  });
  query.addEventListener("input", () => { limit = PAGE; setState({ query: query.value }); });
  correct.addEventListener("change", () => { limit = PAGE; setState({ correct: correct.value as CorrectFilter }); });
  verdict.addEventListener("change", () => { limit = PAGE; setState({ verdict: verdict.value as VerdictFilter }); });
  risk.addEventListener("input", () => { limit = PAGE; setState({ min_risk: Number(risk.value) }); });
  more.addEventListener("click", () => { limit += PAGE; drawBody(); });

  store.on(["rows", "columns"], drawAll);
  store.on(["table"], () => { drawControls(); drawHead(); drawBody(); });
  store.on(["row"], () => { drawBody(); drawStatus(); });
  store.on(["loaded_row", "status", "data"], drawStatus);
  drawAll();
  return () => { unmountDash(); root.remove(); };
}
