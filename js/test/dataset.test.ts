import { beforeEach, describe, expect, it } from "vitest";
import { riskInfo } from "../src/components/badge";
import { DEFAULT_TABLE, filterRows, HINT_CHARS, nextSort, sortRows, toRows, visibleRows, wrongHint, type TableState } from "../src/components/dataset";
import { hasLens, lensData, lensLayout, lensToken } from "../src/components/heatmap";
import { render } from "../src/render";
import { decodePayload } from "../src/payload";
import { DEFAULT_OPTIONS } from "../src/store";
import { fakeModel, lensPayload, samplePayload } from "./helpers";

const dv = (u: Uint8Array) => new DataView(u.buffer, u.byteOffset, u.byteLength);
const empty = () => new DataView(new ArrayBuffer(0));

/** Five prompts: risks with one withheld (outside the risk model's range), two graded wrong, one ungraded. */
const COLS = {
  prompt: ["What is 2 plus 3?", "Capital of France?", "What is 7 times 8?", "Capital of Peru?", "On which continent is Chad?"],
  answer: ["5", "Paris", "54", "Cusco", "Africa"],
  expected: ["5", "Paris", "56", "Lima", "Africa"],
  correct: [true, true, false, false, null],
  risk: [0.1, 0.3, 0.9, null, 0.55],
  risk_withheld: [false, false, false, true, false],
  verdict: ["green", "yellow", "red", "yellow", "green"],
  tokens: [3, 4, 6, 5, 2],
  entropy: [0.2, 1.5, 3.1, 2.2, null],
};

function mount(extra: Record<string, any> = {}) {
  const model = fakeModel({
    view: "dataset", data: empty(), edges: empty(), rows: COLS,
    columns: { risk_kind: "logistic", risk_label: "calibrated", graded: true, has_expected: true, n: 5 },
    row: null, loaded_row: null, table: { ...DEFAULT_TABLE }, status: "",
    selection: { step: null, token: null, layer: null, head: null, metric: "entropy" },
    options: { ...DEFAULT_OPTIONS }, progress: {}, live_tokens: [], ...extra,
  });
  const el = document.createElement("div");
  document.body.append(el);
  const cleanup = render({ model, el });
  const shownRows = () => Array.from(el.querySelectorAll<HTMLElement>(".cv-ds-table tbody tr")).map((r) => Number(r.dataset.row));
  return { model, el, cleanup, shownRows };
}

beforeEach(() => { document.body.replaceChildren(); });

describe("dataset rows (pure)", () => {
  const rows = toRows(COLS);
  const st = (patch: Partial<TableState>): TableState => ({ ...DEFAULT_TABLE, ...patch });

  it("turns the JSON columns into rows", () => {
    expect(rows).toHaveLength(5);
    expect(rows[2]).toEqual({ i: 2, prompt: "What is 7 times 8?", answer: "54", expected: "56", correct: false, risk: 0.9,
      riskWithheld: false, verdict: "red", tokens: 6, entropy: 3.1 });
    expect(rows[3].riskWithheld).toBe(true);
    const { risk_withheld: _withheld, ...older } = COLS; // a payload from before the column existed
    expect(toRows(older)[3].riskWithheld).toBe(false);
    expect(toRows(null)).toEqual([]);
  });

  it("sorts numbers both ways with missing values last", () => {
    expect(sortRows(rows, "risk", true).map((r) => r.i)).toEqual([2, 4, 1, 0, 3]);
    expect(sortRows(rows, "risk", false).map((r) => r.i)).toEqual([0, 1, 4, 2, 3]);
    expect(sortRows(rows, "entropy", false).map((r) => r.i)).toEqual([0, 1, 3, 2, 4]);
    expect(sortRows(rows, "index", true).map((r) => r.i)).toEqual([4, 3, 2, 1, 0]);
  });

  it("sorts text, verdicts (green < yellow < red) and correctness, ties in TraceSet order", () => {
    expect(sortRows(rows, "answer", false).map((r) => r.answer)).toEqual(["5", "54", "Africa", "Cusco", "Paris"]);
    expect(sortRows(rows, "verdict", true).map((r) => r.i)).toEqual([2, 1, 3, 0, 4]);
    expect(sortRows(rows, "correct", false).map((r) => r.i)).toEqual([2, 3, 0, 1, 4]);
  });

  it("filters by text, correctness, verdict and minimum risk", () => {
    expect(filterRows(rows, st({ query: "CAPITAL" })).map((r) => r.i)).toEqual([1, 3]);
    expect(filterRows(rows, st({ query: "lima" })).map((r) => r.i)).toEqual([3]); // the expected answer counts
    expect(filterRows(rows, st({ correct: "incorrect" })).map((r) => r.i)).toEqual([2, 3]);
    expect(filterRows(rows, st({ correct: "correct" })).map((r) => r.i)).toEqual([0, 1]);
    expect(filterRows(rows, st({ correct: "ungraded" })).map((r) => r.i)).toEqual([4]);
    expect(filterRows(rows, st({ verdict: "yellow" })).map((r) => r.i)).toEqual([1, 3]);
    expect(filterRows(rows, st({ min_risk: 0.5 })).map((r) => r.i)).toEqual([2, 4]); // unknown risk drops out
    expect(visibleRows(rows, st({ min_risk: 0.2, sort: "risk", desc: true })).map((r) => r.i)).toEqual([2, 4, 1]);
  });

  it("a header click flips the direction of the sorted column, a new column starts at its natural direction", () => {
    const a = nextSort(DEFAULT_TABLE, "risk");
    expect([a.sort, a.desc]).toEqual(["risk", true]);
    const b = nextSort(a, "risk");
    expect([b.sort, b.desc]).toEqual(["risk", false]);
    const c = nextSort(b, "prompt");
    expect([c.sort, c.desc]).toEqual(["prompt", false]);
  });
});

describe("dataset view", () => {
  it("lists every row with its risk, correctness and verdict", () => {
    const { el, shownRows } = mount();
    expect(shownRows()).toEqual([0, 1, 2, 3, 4]);
    const root = el.querySelector(".cv-dataset") as HTMLElement;
    expect(root.dataset.rows).toBe("5");
    const heads = Array.from(el.querySelectorAll<HTMLElement>("th")).map((t) => t.dataset.col);
    expect(heads).toEqual(["index", "prompt", "answer", "expected", "correct", "risk", "verdict", "tokens", "entropy"]);
    expect(el.querySelector("th[data-col='risk']")!.textContent).toContain("calibrated");
    const r2 = el.querySelector("tr[data-row='2']")!;
    expect(r2.querySelector(".cv-ds-risk-cell")!.textContent).toBe("0.90");
    // a wrong answer shows what was expected next to the ✗ (the column may be scrolled out of view)
    expect(r2.querySelector(".cv-ds-correct-cell")!.textContent).toBe("✗ (expected: 56)");
    // outside the risk model's calibrated range: no number, and the cell says why
    const withheld = el.querySelector("tr[data-row='3'] .cv-ds-risk-cell") as HTMLElement;
    expect(withheld.textContent).toBe("n/s");
    expect(withheld.title).toContain("outside the range the risk model was calibrated on");
    expect((el.querySelector(".cv-ds-dashboard") as HTMLElement).hidden).toBe(true);
  });

  it("shows the expected answer next to ✗ (short, the whole of it on hover), and nothing next to ✓ or –", () => {
    const { el } = mount();
    const cell = (i: number) => el.querySelector(`tr[data-row='${i}'] .cv-ds-correct-cell`) as HTMLElement;
    expect(cell(3).textContent).toBe("✗ (expected: Lima)");
    expect(cell(3).title).toBe("wrong; expected: Lima");
    expect(cell(3).querySelector(".cv-ds-expected-hint")!.textContent).toBe(" (expected: Lima)");
    expect(cell(0).textContent).toBe("✓");
    expect(cell(4).textContent).toBe("–");
    // also when the expected column itself is hidden (the row still carries it)
    const other = mount({ columns: { risk_label: "calibrated", graded: true, has_expected: false } });
    expect((other.el.querySelector("tr[data-row='2'] .cv-ds-correct-cell") as HTMLElement).textContent).toBe("✗ (expected: 56)");
  });

  it("words the hint purely: none without an expected answer, long ones cut", () => {
    expect(wrongHint({ correct: false, expected: "Lima" })).toBe("(expected: Lima)");
    expect(wrongHint({ correct: false, expected: null })).toBeNull();
    expect(wrongHint({ correct: false, expected: "  " })).toBeNull();
    expect(wrongHint({ correct: true, expected: "Lima" })).toBeNull();
    expect(wrongHint({ correct: null, expected: "Lima" })).toBeNull();
    const long = wrongHint({ correct: false, expected: "The mitochondria is the powerhouse of the cell" })!;
    expect(long).toBe(`(expected: ${"The mitochondria is the powerhouse of the cell".slice(0, HINT_CHARS - 1)}…)`);
  });

  it("hides the expected and correct columns when there is nothing to show", () => {
    const { el } = mount({ columns: { risk_label: "uncalibrated heuristic", graded: false, has_expected: false } });
    const heads = Array.from(el.querySelectorAll<HTMLElement>("th")).map((t) => t.dataset.col);
    expect(heads).not.toContain("correct");
    expect(heads).not.toContain("expected");
    expect((el.querySelector(".cv-ds-correct") as HTMLElement).hidden).toBe(true);
    expect(el.querySelector("th[data-col='risk']")!.textContent).toContain("uncalibrated heuristic");
  });

  it("sorts on a header click (and again the other way), saving the state in the table trait", () => {
    const { el, model, shownRows } = mount();
    (el.querySelector("th[data-col='risk']") as HTMLElement).click();
    expect(model.get("table")).toMatchObject({ sort: "risk", desc: true });
    expect(model.saves).toBeGreaterThan(0);
    expect(shownRows()).toEqual([2, 4, 1, 0, 3]);
    expect(el.querySelector("th[data-col='risk']")!.getAttribute("aria-sort")).toBe("descending");
    (el.querySelector("th[data-col='risk'] span") as HTMLElement).click();
    expect(shownRows()).toEqual([0, 1, 4, 2, 3]);
    model.set("table", { ...model.get("table"), sort: "tokens", desc: false }); // from Python: view.sort_by("tokens")
    expect(shownRows()).toEqual([4, 0, 1, 3, 2]);
  });

  it("filters with the text box, the correct/incorrect select and the risk slider", () => {
    const { el, model, shownRows } = mount();
    const q = el.querySelector(".cv-ds-query") as HTMLInputElement;
    q.value = "capital";
    q.dispatchEvent(new Event("input", { bubbles: true }));
    expect(shownRows()).toEqual([1, 3]);
    expect(model.get("table").query).toBe("capital");
    expect(el.querySelector(".cv-ds-count")!.textContent).toBe("2 of 5 shown");
    q.value = "";
    q.dispatchEvent(new Event("input", { bubbles: true }));
    const sel = el.querySelector(".cv-ds-correct") as HTMLSelectElement;
    sel.value = "incorrect";
    sel.dispatchEvent(new Event("change", { bubbles: true }));
    expect(shownRows()).toEqual([2, 3]);
    sel.value = "all";
    sel.dispatchEvent(new Event("change", { bubbles: true }));
    const risk = el.querySelector(".cv-ds-risk") as HTMLInputElement;
    risk.value = "0.5";
    risk.dispatchEvent(new Event("input", { bubbles: true }));
    expect(shownRows()).toEqual([2, 4]);
    expect(model.get("table").min_risk).toBe(0.5);
  });

  it("a row click sets the row trait and highlights it; the dashboard appears when the kernel sends that trace", () => {
    const { el, model } = mount();
    (el.querySelector("tr[data-row='2'] td") as HTMLElement).click();
    expect(model.get("row")).toBe(2);
    expect(model.saves).toBeGreaterThan(0);
    const tr = el.querySelector("tr[data-row='2']")!;
    expect(tr.classList.contains("cv-ds-selected")).toBe(true);
    expect(el.querySelectorAll(".cv-ds-selected")).toHaveLength(1);
    expect(el.querySelector(".cv-ds-status")!.textContent).toContain("Loading the trace of row 2");
    expect((el.querySelector(".cv-ds-dashboard") as HTMLElement).hidden).toBe(true);
    // the kernel's answer: the trace payload and the row it belongs to
    model.set("data", dv(samplePayload()));
    model.set("loaded_row", 2);
    expect((el.querySelector(".cv-ds-dashboard") as HTMLElement).hidden).toBe(false);
    expect(el.querySelectorAll(".cv-ds-dashboard .cv-timeline .cv-tok")).toHaveLength(7);
    expect(el.querySelector(".cv-ds-status")!.textContent).toContain("Row 2");
    // arrow keys move to the next visible row
    (el.querySelector(".cv-dataset") as HTMLElement).dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowDown", bubbles: true }));
    expect(model.get("row")).toBe(3);
  });

  it("shows the kernel's error when a trace cannot be loaded", () => {
    const { el } = mount({ row: 1, status: "could not load the trace of row 1: file truncated" });
    const s = el.querySelector(".cv-ds-status") as HTMLElement;
    expect(s.classList.contains("cv-ds-error")).toBe(true);
    expect(s.textContent).toContain("truncated");
  });

  it("pages long tables", () => {
    const n = 450;
    const big = {
      prompt: Array.from({ length: n }, (_, i) => `q${i}`), answer: Array(n).fill("a"), expected: Array(n).fill(null),
      correct: Array(n).fill(null), risk: Array.from({ length: n }, (_, i) => i / n), verdict: Array(n).fill("green"),
      tokens: Array(n).fill(1), entropy: Array(n).fill(1),
    };
    const { el, shownRows } = mount({ rows: big });
    expect(shownRows()).toHaveLength(200);
    (el.querySelector(".cv-ds-more") as HTMLElement).click();
    expect(shownRows()).toHaveLength(400);
    (el.querySelector(".cv-ds-more") as HTMLElement).click();
    expect(shownRows()).toHaveLength(450);
    expect((el.querySelector(".cv-ds-more") as HTMLElement).hidden).toBe(true);
  });
});

describe("risk in the health badge", () => {
  it("reads the payload's risk and kind", () => {
    const meta = decodePayload(lensPayload()).meta;
    expect(riskInfo(meta)).toMatchObject({ value: 0.8125, label: "calibrated", text: "0.81" });
    expect(riskInfo({ risk: null })).toBeNull();
    expect(riskInfo({ risk: { value: 0.3, kind: "heuristic" } })!.label).toBe("uncalibrated heuristic");
  });

  it("shows the risk with its kind, or nothing when the trace has none", () => {
    const model = fakeModel({ view: "badge", data: dv(lensPayload()), edges: empty(), selection: {}, options: { ...DEFAULT_OPTIONS }, progress: {}, live_tokens: [] });
    const el = document.createElement("div");
    render({ model, el });
    const r = el.querySelector(".cv-risk") as HTMLElement;
    expect(r.textContent).toBe("risk 0.81 (calibrated)");
    expect(Number(r.dataset.risk)).toBe(0.8125);
    model.set("data", dv(samplePayload()));
    expect(el.querySelector(".cv-risk")).toBeNull();
  });
});

describe("logit lens view", () => {
  it("transposes [T, L] to layers x steps and names the top-1 tokens", () => {
    const p = decodePayload(lensPayload());
    expect(hasLens(p)).toBe(true);
    const d = lensData(p)!;
    expect([d.L, d.T]).toEqual([2, 3]);
    expect(Array.from(d.values)).toEqual([0, 1, 2, 0.1, 1.1, 2.1].map((v) => Math.fround(v)));
    expect(Array.from(d.top1)).toEqual([11, 12, 99, 12, 12, 11]);
    expect(lensToken(d, 12)).toBe('" scatters"');
    expect(lensToken(d, 99)).toBe("#99"); // not decoded
    // the lens entropy has a fixed scale (0-16 bits), no longer this trace's largest value (2.1 bits)
    expect([d.lo, d.hi]).toEqual([0, 16]);
    const g = lensLayout(30, 64, 520);
    expect(g.width).toBeLessThanOrEqual(520);
    expect(hasLens(decodePayload(samplePayload()))).toBe(false);
  });

  it("offers the lens only when the trace has it, draws L x T cells and selects (step, layer) on click", () => {
    const model = fakeModel({ view: "heatmap", data: dv(samplePayload()), edges: empty(),
      selection: { step: 0, token: null, layer: null, head: null, metric: "entropy" }, options: { ...DEFAULT_OPTIONS }, progress: {}, live_tokens: [] });
    const el = document.createElement("div");
    document.body.append(el);
    render({ model, el });
    const src = el.querySelector(".cv-heat-source") as HTMLSelectElement;
    expect(Array.from(src.options).map((o) => o.value)).toEqual(["step", "prompt"]);
    model.set("data", dv(lensPayload()));
    expect(Array.from(src.options).map((o) => o.value)).toEqual(["step", "prompt", "lens"]);
    src.value = "lens";
    src.dispatchEvent(new Event("change", { bubbles: true }));
    expect(model.get("options").heat_source).toBe("lens");
    const root = el.querySelector(".cv-heatmap") as HTMLElement;
    expect([root.dataset.rows, root.dataset.cols, root.dataset.cells, root.dataset.value]).toEqual(["2", "3", "6", "lens_entropy"]);
    expect((el.querySelector(".cv-heat-value") as HTMLElement).hidden).toBe(true);
    root.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowRight", bubbles: true }));
    expect(model.get("selection")).toMatchObject({ step: 1, layer: 0 });
    // a trace without the lens falls back to the step view
    model.set("data", dv(samplePayload()));
    expect(root.dataset.value).toBe("entropy");
    expect(root.dataset.cells).toBe("6");
    expect(Array.from(src.options).map((o) => o.value)).toEqual(["step", "prompt"]);
  });
});
