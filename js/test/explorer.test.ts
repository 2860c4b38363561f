/** The explorer view: the prompt box, settings, Run / Stop and the run history of corevital.explore(). */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { HINT, parseSettings, pickRole, PROMPT_DEBOUNCE_MS, riskCell, runsOf, togglePick } from "../src/components/explorer";
import { render } from "../src/render";
import { fakeModel, mountView, unmountAll } from "./helpers";

const SETTINGS = { max_new_tokens: 32, do_sample: false, temperature: 0.7, top_p: 0.9, seed: null };

const RUNS = [
  { id: 1, snippet: "Why is the sky blue?", prompt: "Why is the sky blue? Answer in two sentences.", verdict: "green", sentence: "Nothing unusual.",
    risk: 0.1234, risk_label: "calibrated", settings_text: "greedy · 32 tokens", n_steps: 32, stopped: false, source: "run", label: "" },
  { id: 2, snippet: "Why is the sky red?", prompt: "Why is the sky red? Answer in two sentences.", verdict: "yellow", sentence: "Unusual at layer 14.",
    risk: null, risk_label: "outside the risk model's calibration", settings_text: "sampling T=0.7 top-p 0.9 seed 1 · 32 tokens", n_steps: 11,
    stopped: true, source: "run", label: "" },
  { id: 3, snippet: "Capital of France?", prompt: "Capital of France?", verdict: null, sentence: "", risk: null, risk_label: "",
    settings_text: "greedy · 8 tokens", n_steps: 8, stopped: false, source: "loaded", label: "saved[0]" },
];

function mount(extra: Record<string, any> = {}) {
  return mountView("explorer", new Uint8Array(0), {
    prompt: "", chat: false, has_chat_template: true, settings: { ...SETTINGS }, running: false, status: "", runs: [], picked: [], ...extra,
  });
}

const q = <T extends HTMLElement>(el: HTMLElement, sel: string) => el.querySelector(sel) as T;
const sentOfType = (model: { sent: unknown[] }, type: string) => model.sent.filter((m: any) => m?.type === type);
const type = (ta: HTMLTextAreaElement, text: string) => { ta.value = text; ta.dispatchEvent(new Event("input")); };
const change = (input: HTMLInputElement | HTMLSelectElement, v: string) => { input.value = v; input.dispatchEvent(new Event("change")); };

beforeEach(() => { document.body.replaceChildren(); });
afterEach(() => { unmountAll(); vi.useRealTimers(); });

describe("explorer: run and stop", () => {
  it("Run sets the prompt, chat and settings, saves, then sends {type: 'run'}", () => {
    const { el, model } = mount();
    const seenAtSend: any[] = [];
    const send = model.send.bind(model);
    model.send = (msg: any) => {
      if (msg?.type === "run") seenAtSend.push({ prompt: model.get("prompt"), settings: model.get("settings"), chat: model.get("chat"), saves: model.saves });
      send(msg);
    };
    const run = q<HTMLButtonElement>(el, ".cv-ex-run");
    expect(run.disabled).toBe(true); // nothing typed yet
    type(q(el, ".cv-ex-prompt"), "Why is the sky blue?");
    expect(run.disabled).toBe(false);
    change(q(el, ".cv-ex-mode"), "sampling");
    change(q(el, ".cv-ex-temp"), "0.5");
    change(q(el, ".cv-ex-seed"), "7");
    change(q(el, ".cv-ex-max"), "12");
    (q<HTMLInputElement>(el, ".cv-ex-chat")).click();
    run.click();
    expect(sentOfType(model, "run")).toEqual([{ type: "run" }]);
    expect(seenAtSend).toHaveLength(1);
    expect(seenAtSend[0].prompt).toBe("Why is the sky blue?");
    expect(seenAtSend[0].chat).toBe(true);
    expect(seenAtSend[0].settings).toEqual({ max_new_tokens: 12, do_sample: true, temperature: 0.5, top_p: 0.9, seed: 7 });
    expect(seenAtSend[0].saves).toBeGreaterThan(0);
    // one click, one run: the button waits for the kernel's `running`
    run.click();
    expect(sentOfType(model, "run")).toHaveLength(1);
  });

  it("Ctrl+Enter in the prompt box runs", () => {
    const { el, model } = mount({ prompt: "Hello" });
    const ta = q<HTMLTextAreaElement>(el, ".cv-ex-prompt");
    expect(ta.value).toBe("Hello");
    ta.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", ctrlKey: true, bubbles: true }));
    expect(sentOfType(model, "run")).toHaveLength(1);
  });

  it("sends the prompt as the user types, debounced", () => {
    vi.useFakeTimers();
    const { el, model } = mount();
    const ta = q<HTMLTextAreaElement>(el, ".cv-ex-prompt");
    type(ta, "Wh");
    type(ta, "Why");
    expect(model.get("prompt")).toBe("");
    vi.advanceTimersByTime(PROMPT_DEBOUNCE_MS + 10);
    expect(model.get("prompt")).toBe("Why");
    // the kernel's prompt shows unless the user is typing
    model.set("prompt", "Set by Python");
    expect(ta.value).toBe("Set by Python");
  });

  it("Stop is enabled only while running; Run is disabled while running", () => {
    const { el, model } = mount({ prompt: "Hello" });
    const run = q<HTMLButtonElement>(el, ".cv-ex-run"), stop = q<HTMLButtonElement>(el, ".cv-ex-stop");
    expect(stop.disabled).toBe(true);
    expect(run.disabled).toBe(false);
    stop.click();
    expect(sentOfType(model, "stop")).toHaveLength(0);
    model.set("running", true);
    model.set("status", "generating 3/32");
    expect(stop.disabled).toBe(false);
    expect(run.disabled).toBe(true);
    expect(q(el, ".cv-ex-status").textContent).toBe("generating 3/32");
    expect(q(el, ".cv-explorer").dataset.running).toBe("1");
    stop.click();
    expect(sentOfType(model, "stop")).toEqual([{ type: "stop" }]);
    model.set("running", false);
    model.set("status", "stopped at step 5: partial trace kept");
    expect(stop.disabled).toBe(true);
    expect(run.disabled).toBe(false);
    expect(q(el, ".cv-ex-status").textContent).toBe("stopped at step 5: partial trace kept");
  });

  it("disables the sampling fields in greedy mode and shows the chat toggle only with a chat template", () => {
    const { el } = mount();
    expect(q<HTMLInputElement>(el, ".cv-ex-temp").disabled).toBe(true);
    expect(q<HTMLInputElement>(el, ".cv-ex-topp").disabled).toBe(true);
    expect(q<HTMLInputElement>(el, ".cv-ex-seed").disabled).toBe(true);
    expect(q<HTMLInputElement>(el, ".cv-ex-max").value).toBe("32");
    change(q(el, ".cv-ex-mode"), "sampling");
    expect(q<HTMLInputElement>(el, ".cv-ex-temp").disabled).toBe(false);
    expect((q<HTMLInputElement>(el, ".cv-ex-chat").closest("label") as HTMLElement).hidden).toBe(false);
    unmountAll();
    const plain = mount({ has_chat_template: false });
    expect((q<HTMLInputElement>(plain.el, ".cv-ex-chat").closest("label") as HTMLElement).hidden).toBe(true);
  });
});

describe("explorer: run history", () => {
  it("draws the rows from the runs trait, newest first", () => {
    const { el, model } = mount({ runs: RUNS });
    const rows = el.querySelectorAll<HTMLElement>(".cv-ex-history tbody tr[data-run-id]");
    expect(Array.from(rows).map((r) => r.dataset.runId)).toEqual(["3", "2", "1"]);
    const r1 = q(el, "tr[data-run-id='1']"), r2 = q(el, "tr[data-run-id='2']"), r3 = q(el, "tr[data-run-id='3']");
    expect(r1.querySelector(".cv-ex-snippet")!.getAttribute("title")).toBe(RUNS[0].prompt);
    expect(r1.querySelector(".cv-ex-verdict .cv-light.cv-green")).not.toBeNull();
    expect(r1.querySelector(".cv-ex-verdict")!.textContent).toContain("green");
    expect(r1.querySelector(".cv-ex-risk")!.textContent).toBe("0.12");
    expect(r2.querySelector(".cv-ex-risk")!.textContent).toBe("n/s");
    expect(r2.querySelector(".cv-ex-risk")!.getAttribute("title")).toBe("outside the risk model's calibration");
    expect(r2.querySelector(".cv-ex-steps")!.textContent).toBe("11stopped");
    expect(r2.querySelector(".cv-ex-stopped")).not.toBeNull();
    expect(r1.querySelector(".cv-ex-stopped")).toBeNull();
    expect(r3.querySelector(".cv-ex-label")!.textContent).toBe("saved[0]loaded");
    expect(r3.querySelector(".cv-ex-settings")!.textContent).toBe("greedy · 8 tokens");
    expect(q(el, ".cv-ex-hint").textContent).toContain(HINT);
    model.set("runs", RUNS.slice(0, 1));
    expect(el.querySelectorAll(".cv-ex-history tbody tr[data-run-id]")).toHaveLength(1);
  });

  it("a row click toggles its pick; at most two, a third drops the oldest", () => {
    const { el, model } = mount({ runs: RUNS });
    const click = (id: number) => q(el, `tr[data-run-id='${id}']`).click();
    const pickedRows = () => Array.from(el.querySelectorAll<HTMLElement>("tr.cv-picked")).map((r) => Number(r.dataset.runId)).sort();
    click(1);
    expect(model.get("picked")).toEqual([1]);
    expect(pickedRows()).toEqual([1]);
    expect(q(el, "tr[data-run-id='1']").dataset.pick).toBe("shown");
    click(2);
    expect(model.get("picked")).toEqual([1, 2]);
    expect(q(el, "tr[data-run-id='1']").dataset.pick).toBe("A");
    expect(q(el, "tr[data-run-id='2']").dataset.pick).toBe("B");
    click(3);
    expect(model.get("picked")).toEqual([2, 3]);
    expect(pickedRows()).toEqual([2, 3]);
    click(3);
    expect(model.get("picked")).toEqual([2]);
    expect(pickedRows()).toEqual([2]);
    expect(model.saves).toBeGreaterThanOrEqual(4);
  });

  it("renders from the model's state alone (a page reload)", () => {
    const state = {
      view: "explorer", data: new DataView(new ArrayBuffer(0)), prompt: "Why is the sky red?", chat: true, has_chat_template: true,
      settings: { max_new_tokens: 16, do_sample: true, temperature: 0.8, top_p: 0.95, seed: 3 }, running: true, status: "generating 4/16",
      runs: RUNS, picked: [2, 1],
    };
    const draw = () => {
      const el = document.createElement("div");
      document.body.append(el);
      const cleanup = render({ model: fakeModel({ ...state }), el });
      const snapshot = {
        prompt: q<HTMLTextAreaElement>(el, ".cv-ex-prompt").value, chat: q<HTMLInputElement>(el, ".cv-ex-chat").checked,
        max: q<HTMLInputElement>(el, ".cv-ex-max").value, mode: q<HTMLSelectElement>(el, ".cv-ex-mode").value,
        temp: q<HTMLInputElement>(el, ".cv-ex-temp").value, seed: q<HTMLInputElement>(el, ".cv-ex-seed").value,
        run: q<HTMLButtonElement>(el, ".cv-ex-run").disabled, stop: q<HTMLButtonElement>(el, ".cv-ex-stop").disabled,
        status: q(el, ".cv-ex-status").textContent,
        picked: Array.from(el.querySelectorAll<HTMLElement>("tr.cv-picked")).map((r) => `${r.dataset.runId}:${r.dataset.pick}`),
        history: q(el, ".cv-ex-history").outerHTML,
      };
      cleanup();
      el.remove();
      return snapshot;
    };
    const first = draw();
    expect(first).toMatchObject({ prompt: "Why is the sky red?", chat: true, max: "16", mode: "sampling", temp: "0.8", seed: "3",
      run: true, stop: false, status: "generating 4/16", picked: ["2:A", "1:B"] });
    expect(draw()).toEqual(first);
  });
});

describe("explorer: pure parts", () => {
  it("toggles picks, keeping the two newest", () => {
    expect(togglePick([], 4)).toEqual([4]);
    expect(togglePick([4], 5)).toEqual([4, 5]);
    expect(togglePick([4, 5], 6)).toEqual([5, 6]);
    expect(togglePick([4, 5], 4)).toEqual([5]);
    expect(pickRole([4, 5], 5)).toBe("B");
    expect(pickRole([4], 4)).toBe("shown");
    expect(pickRole([4], 5)).toBe("");
  });

  it("parses the settings fields, keeping the previous value of a field that does not parse", () => {
    const prev = { ...SETTINGS };
    expect(parseSettings({ max: "0", mode: "sampling", temp: "-1", topp: "1.5", seed: "x" }, { ...prev, seed: 2 }))
      .toEqual({ ...prev, do_sample: true, seed: 2 });
    expect(parseSettings({ max: "100", mode: "greedy", temp: "1.2", topp: "0.5", seed: "" }, prev))
      .toEqual({ max_new_tokens: 100, do_sample: false, temperature: 1.2, top_p: 0.5, seed: null });
  });

  it("reads the runs trait and the risk cell", () => {
    const runs = runsOf([...RUNS, { bad: true }]);
    expect(runs).toHaveLength(3);
    expect(riskCell(runs[0])).toMatchObject({ text: "0.12" });
    expect(riskCell(runs[1])).toEqual({ text: "n/s", title: "outside the risk model's calibration" });
    expect(riskCell(runs[2])).toEqual({ text: "n/s", title: "not scored" });
  });
});
