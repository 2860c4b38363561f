/**
 * Explorer view: the controls of `corevital.explore(model, tokenizer)`: a prompt box, the chat
 * template toggle (when the tokenizer has one), the generation settings, Run / Stop, the status
 * line and the run history, where picking one run shows it and picking two compares them.
 *
 * Python owns `running`, `status`, `runs` and `has_chat_template`; this view sets `prompt`
 * (debounced as the user types, and before a run), `chat`, `settings` and `picked`, and sends
 * {type: "run"} / {type: "stop"}. Everything is drawn from the model's state alone, so a page
 * reload (a re-render from the kernel's state) shows the same history and picks.
 */
import { h } from "../dom";
import { riskColor } from "../scales";
import type { Store } from "../store";

export interface RunInfo {
  id: number;
  snippet: string;
  prompt: string;
  verdict: "green" | "yellow" | "red" | null;
  sentence: string;
  risk: number | null;
  risk_label: string;
  settings_text: string;
  n_steps: number;
  stopped: boolean;
  source: "run" | "loaded";
  label: string;
}

export interface Settings { max_new_tokens: number; do_sample: boolean; temperature: number; top_p: number; seed: number | null }

/** Used only where the `settings` trait lacks a field (Python owns the defaults). */
export const FALLBACK_SETTINGS: Settings = { max_new_tokens: 64, do_sample: false, temperature: 1, top_p: 1, seed: null };

/** How long typing pauses before the prompt is sent to the kernel. */
export const PROMPT_DEBOUNCE_MS = 300;
/** How long a Run click waits for the kernel's `running` before the button takes clicks again. */
export const RUN_PENDING_MS = 1500;
/** At most this many runs are picked (one is shown, two are compared). */
export const MAX_PICKED = 2;

export const HINT = "pick one run to show it, two to compare";

/** The `settings` trait with every field present and typed (pure). */
export function settingsOf(raw: unknown): Settings {
  const r = (raw && typeof raw === "object" ? raw : {}) as Record<string, unknown>;
  const num = (v: unknown, d: number) => (typeof v === "number" && Number.isFinite(v) ? v : d);
  return {
    max_new_tokens: Math.max(1, Math.round(num(r.max_new_tokens, FALLBACK_SETTINGS.max_new_tokens))),
    do_sample: Boolean(r.do_sample),
    temperature: num(r.temperature, FALLBACK_SETTINGS.temperature),
    top_p: num(r.top_p, FALLBACK_SETTINGS.top_p),
    seed: typeof r.seed === "number" && Number.isInteger(r.seed) ? r.seed : null,
  };
}

/** The settings the fields say; a field that does not parse keeps its previous value (pure). */
export function parseSettings(f: { max: string; mode: string; temp: string; topp: string; seed: string }, prev: Settings): Settings {
  const max = Number(f.max), temp = Number(f.temp), topp = Number(f.topp), seedText = f.seed.trim(), seed = Number(seedText);
  return {
    max_new_tokens: f.max.trim() !== "" && Number.isInteger(max) && max >= 1 ? max : prev.max_new_tokens,
    do_sample: f.mode === "sampling",
    temperature: f.temp.trim() !== "" && Number.isFinite(temp) && temp > 0 ? temp : prev.temperature,
    top_p: f.topp.trim() !== "" && Number.isFinite(topp) && topp > 0 && topp <= 1 ? topp : prev.top_p,
    seed: seedText === "" ? null : Number.isInteger(seed) && seed >= 0 ? seed : prev.seed,
  };
}

/** The `runs` trait as typed rows (pure; malformed entries dropped). */
export function runsOf(raw: unknown): RunInfo[] {
  if (!Array.isArray(raw)) return [];
  const out: RunInfo[] = [];
  for (const r of raw) {
    if (!r || typeof r !== "object" || typeof r.id !== "number") continue;
    const v = r.verdict;
    out.push({
      id: r.id, snippet: String(r.snippet ?? r.prompt ?? ""), prompt: String(r.prompt ?? ""),
      verdict: v === "green" || v === "yellow" || v === "red" ? v : null, sentence: String(r.sentence ?? ""),
      risk: typeof r.risk === "number" && Number.isFinite(r.risk) ? r.risk : null, risk_label: String(r.risk_label ?? ""),
      settings_text: String(r.settings_text ?? ""), n_steps: Number(r.n_steps ?? 0), stopped: Boolean(r.stopped),
      source: r.source === "loaded" ? "loaded" : "run", label: String(r.label ?? ""),
    });
  }
  return out;
}

/** The `picked` trait as run ids (pure). */
export function pickedOf(raw: unknown): number[] {
  return Array.isArray(raw) ? raw.filter((x): x is number => typeof x === "number" && Number.isFinite(x)) : [];
}

/** A click on run `id`: a picked run is dropped, another is added; a third pick drops the oldest (pure). */
export function togglePick(picked: number[], id: number): number[] {
  if (picked.includes(id)) return picked.filter((p) => p !== id);
  return [...picked, id].slice(-MAX_PICKED);
}

/** The risk cell: two decimals, or "n/s" (not shown) with the reason in its title (pure). */
export function riskCell(r: RunInfo): { text: string; title: string } {
  if (r.risk !== null) return { text: r.risk.toFixed(2), title: r.risk_label ? `risk of a wrong answer (${r.risk_label}): ${r.risk.toFixed(4)}` : `risk of a wrong answer: ${r.risk.toFixed(4)}` };
  return { text: "n/s", title: r.risk_label || "not scored" };
}

/** The pick of a run as the compare view names it: "A" / "B" with two picks, "shown" with one, "" when not picked (pure). */
export function pickRole(picked: number[], id: number): string {
  const k = picked.indexOf(id);
  if (k < 0) return "";
  return picked.length >= 2 ? (k === 0 ? "A" : "B") : "shown";
}

export function mountExplorer(el: HTMLElement, store: Store): () => void {
  const model = store.model;
  const save = () => { try { model.save_changes(); } catch { /* no kernel (static HTML): the change stays local */ } };

  const root = h("div", { class: "cv-explorer" });
  const prompt = h("textarea", { class: "cv-ex-prompt", rows: "4", spellcheck: "false", "aria-label": "prompt",
    placeholder: "Type a prompt… (Ctrl+Enter or ⌘+Enter runs it)" });
  const chat = h("input", { class: "cv-ex-chat", type: "checkbox" });
  const chatField = h("label", { class: "cv-ex-field cv-ex-chat-field", title: "wrap the prompt in the tokenizer's chat template (one user turn)" },
    chat, "chat template");
  const max = h("input", { class: "cv-ex-max", type: "number", min: "1", step: "1", "aria-label": "max new tokens" });
  const mode = h("select", { class: "cv-ex-mode", "aria-label": "decoding" },
    h("option", { value: "greedy", text: "greedy" }), h("option", { value: "sampling", text: "sampling" }));
  const temp = h("input", { class: "cv-ex-temp", type: "number", min: "0.01", step: "0.05", "aria-label": "temperature" });
  const topp = h("input", { class: "cv-ex-topp", type: "number", min: "0.01", max: "1", step: "0.05", "aria-label": "top-p" });
  const seed = h("input", { class: "cv-ex-seed", type: "number", min: "0", step: "1", placeholder: "none", "aria-label": "seed" });
  const run = h("button", { class: "cv-ex-run", type: "button", title: "run the prompt (Ctrl+Enter / ⌘+Enter in the prompt box)", text: "▶ Run" });
  const stop = h("button", { class: "cv-ex-stop", type: "button", title: "stop at the next step and keep the partial trace", text: "■ Stop" });
  const field = (label: string, input: HTMLElement, cls = "") => h("label", { class: `cv-ex-field${cls}` }, label, input);
  const sampling = [field("temperature", temp, " cv-ex-sampling"), field("top-p", topp, " cv-ex-sampling"), field("seed", seed, " cv-ex-sampling")];
  const controls = h("div", { class: "cv-ex-controls" }, chatField, field("max new tokens", max), field("decoding", mode), ...sampling,
    h("span", { class: "cv-ex-actions" }, run, stop));
  const status = h("div", { class: "cv-ex-status", role: "status", "aria-live": "polite" });
  const picks = h("span", { class: "cv-ex-picks" });
  const hint = h("div", { class: "cv-ex-hint cv-muted" }, h("span", { text: HINT }), picks);
  const tbody = h("tbody");
  const table = h("table", { class: "cv-ex-history" },
    h("thead", {}, h("tr", {},
      h("th", { text: "#" }), h("th", { text: "prompt" }), h("th", { text: "verdict" }), h("th", { text: "risk", title: "risk of a wrong answer" }),
      h("th", { text: "settings" }), h("th", { text: "steps", title: "generated tokens" }))),
    tbody);
  root.append(prompt, controls, status, hint, h("div", { class: "cv-ex-history-box" }, table));
  el.append(root);

  let timer: ReturnType<typeof setTimeout> | null = null;
  let pending: ReturnType<typeof setTimeout> | null = null;
  const running = () => Boolean(model.get("running"));
  const hasChat = () => Boolean(model.get("has_chat_template"));

  const flushPrompt = () => {
    if (timer !== null) { clearTimeout(timer); timer = null; }
    if (model.get("prompt") !== prompt.value) { model.set("prompt", prompt.value); save(); }
  };
  const fields = () => ({ max: max.value, mode: mode.value, temp: temp.value, topp: topp.value, seed: seed.value });
  const readSettings = () => parseSettings(fields(), settingsOf(model.get("settings")));

  const syncButtons = () => {
    const busy = running();
    root.dataset.running = busy ? "1" : "0";
    const empty = !prompt.value.trim();
    run.disabled = busy || pending !== null || empty;
    run.title = busy ? "a run is in progress: Stop it first" : empty ? "type a prompt first" : "run the prompt (Ctrl+Enter / ⌘+Enter in the prompt box)";
    stop.disabled = !busy;
    const text = String(model.get("status") ?? "");
    status.textContent = text || (busy ? "running…" : "");
    status.classList.toggle("cv-ex-busy", busy);
  };

  const syncSettings = () => {
    const s = settingsOf(model.get("settings"));
    const set = (input: HTMLInputElement, v: string) => { if (input !== document.activeElement || input.value === "") input.value = v; };
    set(max, String(s.max_new_tokens));
    set(temp, String(s.temperature));
    set(topp, String(s.top_p));
    set(seed, s.seed === null ? "" : String(s.seed));
    mode.value = s.do_sample ? "sampling" : "greedy";
    for (const f of [temp, topp, seed]) f.disabled = !s.do_sample;
    for (const f of sampling) f.classList.toggle("cv-off", !s.do_sample);
    root.dataset.mode = mode.value;
  };

  const syncChat = () => {
    chatField.hidden = !hasChat();
    chat.checked = Boolean(model.get("chat"));
  };

  const syncPrompt = () => {
    // the kernel's prompt, unless the user is typing (a debounced value not yet sent)
    const v = String(model.get("prompt") ?? "");
    if (timer === null && prompt.value !== v) prompt.value = v;
    syncButtons();
  };

  const drawHistory = () => {
    const runs = runsOf(model.get("runs"));
    const picked = pickedOf(model.get("picked"));
    root.dataset.runs = String(runs.length);
    root.dataset.picked = picked.join(",");
    const rows: HTMLElement[] = [];
    for (const r of [...runs].reverse()) { // newest first
      const role = pickRole(picked, r.id);
      const tr = h("tr", { class: `cv-ex-row${role ? " cv-picked" : ""}`, tabindex: "0", "data-run-id": String(r.id),
        "data-verdict": r.verdict ?? "", "data-source": r.source, "aria-selected": role ? "true" : "false",
        title: role ? "click to drop this pick" : "click to pick this run" });
      if (role) tr.dataset.pick = role;
      const first = h("td", { class: "cv-ex-label" }, r.label || `#${r.id}`);
      if (r.source === "loaded") first.append(h("span", { class: "cv-ex-tag cv-ex-loaded", title: "opened from a saved TraceSet", text: "loaded" }));
      if (role) first.append(h("span", { class: "cv-ex-tag cv-ex-pick-tag", text: role }));
      const risk = riskCell(r);
      const riskTd = h("td", { class: "cv-num cv-ex-risk", title: risk.title, text: risk.text });
      if (r.risk !== null) riskTd.style.background = riskColor(r.risk);
      const steps = h("td", { class: "cv-num cv-ex-steps" }, String(r.n_steps));
      if (r.stopped) steps.append(h("span", { class: "cv-ex-tag cv-ex-stopped", title: "stopped before the end: a partial trace", text: "stopped" }));
      tr.append(
        first,
        h("td", { class: "cv-ex-snippet", title: r.prompt, text: r.snippet }),
        h("td", { class: "cv-ex-verdict", title: r.sentence || (r.verdict ?? "no verdict") },
          h("span", { class: `cv-light cv-${r.verdict ?? "pending"}` }), ` ${r.verdict ?? "–"}`),
        riskTd,
        h("td", { class: "cv-ex-settings", text: r.settings_text }),
        steps,
      );
      rows.push(tr);
    }
    if (!rows.length) rows.push(h("tr", { class: "cv-ex-empty" }, h("td", { colspan: "6", class: "cv-muted", text: "no runs yet: type a prompt and press Run" })));
    tbody.replaceChildren(...rows);
    const name = (id: number) => { const r = runs.find((x) => x.id === id); return r ? (r.label || `#${r.id}`) : `#${id}`; };
    picks.textContent = picked.length >= 2 ? ` · comparing ${name(picked[0])} (A) with ${name(picked[1])} (B)`
      : picked.length === 1 ? ` · showing ${name(picked[0])}` : "";
  };

  const doRun = () => {
    if (running() || pending !== null || !prompt.value.trim()) return;
    if (timer !== null) { clearTimeout(timer); timer = null; }
    model.set("prompt", prompt.value);
    model.set("chat", hasChat() && chat.checked);
    model.set("settings", readSettings());
    save();
    model.send({ type: "run" });
    // until the kernel says it runs (or a moment passes), one click is one run
    pending = setTimeout(() => { pending = null; syncButtons(); }, RUN_PENDING_MS);
    syncButtons();
  };
  const clearPending = () => { if (pending !== null) { clearTimeout(pending); pending = null; } };

  prompt.addEventListener("input", () => {
    if (timer !== null) clearTimeout(timer);
    timer = setTimeout(flushPrompt, PROMPT_DEBOUNCE_MS);
    syncButtons();
  });
  prompt.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      ev.stopPropagation(); // not the notebook's "run cell"
      doRun();
    }
  });
  chat.addEventListener("change", () => { model.set("chat", chat.checked); save(); });
  const pushSettings = () => { model.set("settings", readSettings()); save(); syncSettings(); };
  for (const f of [max, mode, temp, topp, seed]) f.addEventListener("change", pushSettings);
  run.addEventListener("click", doRun);
  stop.addEventListener("click", () => { if (running()) model.send({ type: "stop" }); });
  const pick = (target: HTMLElement) => {
    const tr = target.closest?.("tr[data-run-id]") as HTMLElement | null;
    if (!tr) return;
    model.set("picked", togglePick(pickedOf(model.get("picked")), Number(tr.dataset.runId)));
    save();
  };
  tbody.addEventListener("click", (ev) => pick(ev.target as HTMLElement));
  tbody.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter" && ev.key !== " ") return;
    ev.preventDefault();
    pick(ev.target as HTMLElement);
  });

  store.on(["runs", "picked"], drawHistory);
  store.on(["running"], () => { clearPending(); syncButtons(); });
  store.on(["status"], syncButtons);
  store.on(["settings"], syncSettings);
  store.on(["prompt"], syncPrompt);
  store.on(["chat", "has_chat_template"], syncChat);
  prompt.value = String(model.get("prompt") ?? "");
  syncChat();
  syncSettings();
  syncButtons();
  drawHistory();
  root.dataset.ready = "1";
  return () => {
    if (timer !== null) flushPrompt(); // what was typed is not lost
    clearPending();
    root.remove();
  };
}

/** The explorer's CSS (appended to the shared CSS in render.ts). */
export const EXPLORER_CSS = `
.cv-explorer { display: flex; flex-direction: column; gap: 6px; }
.cv-root .cv-ex-prompt { width: 100%; box-sizing: border-box; min-height: 4.8em; resize: vertical; padding: 4px 6px;
  font-family: var(--jp-code-font-family, monospace); font-size: var(--jp-code-font-size, 13px); color: inherit;
  background: var(--jp-layout-color1, #fff); border: 1px solid var(--jp-border-color1, #bbb); border-radius: 3px; }
.cv-ex-controls { display: flex; flex-wrap: wrap; gap: 6px 12px; align-items: center; }
.cv-ex-field { display: inline-flex; gap: 4px; align-items: center; font-size: 12px; }
.cv-ex-field[hidden] { display: none; }
.cv-ex-field.cv-off { opacity: .5; }
.cv-ex-field input[type=number] { width: 4.5em; }
.cv-ex-actions { display: inline-flex; gap: 6px; margin-left: auto; }
.cv-root .cv-ex-run { font-weight: 600; padding: 2px 14px; cursor: pointer; background: var(--jp-brand-color1, #1976d2); color: #fff; border-color: transparent; }
.cv-root .cv-ex-stop { padding: 2px 12px; cursor: pointer; }
.cv-root .cv-ex-stop:not(:disabled) { border-color: var(--jp-error-color1, #d32f2f); color: var(--jp-error-color1, #d32f2f); }
.cv-root .cv-ex-run:disabled, .cv-root .cv-ex-stop:disabled { opacity: .45; cursor: default; }
.cv-ex-status { font-size: 12px; min-height: 1.3em; }
.cv-ex-status.cv-ex-busy::before { content: "● "; color: var(--jp-brand-color1, #1976d2); animation: cv-ex-blink 1s infinite; }
@keyframes cv-ex-blink { 50% { opacity: .2; } }
.cv-ex-hint { font-size: 12px; }
.cv-ex-history-box { max-height: 260px; overflow: auto; border: 1px solid var(--jp-border-color2, #ddd); border-radius: 3px; }
.cv-ex-history { border-collapse: collapse; width: 100%; font-size: 12px; }
.cv-ex-history th { position: sticky; top: 0; z-index: 1; background: var(--jp-layout-color2, #eee); text-align: left; padding: 3px 6px;
  white-space: nowrap; border-bottom: 1px solid var(--jp-border-color1, #bbb); }
.cv-ex-history td { padding: 2px 6px; border-bottom: 1px solid var(--jp-border-color3, #eee); white-space: nowrap; vertical-align: middle; }
.cv-ex-history .cv-num { text-align: right; font-variant-numeric: tabular-nums; }
.cv-ex-snippet { max-width: 340px; overflow: hidden; text-overflow: ellipsis; font-family: var(--jp-code-font-family, monospace); }
.cv-ex-row { cursor: pointer; }
.cv-ex-row:hover { background: var(--jp-layout-color2, #f3f3f3); }
.cv-ex-row.cv-picked { background: rgba(33, 150, 243, 0.22); outline: 2px solid var(--jp-brand-color1, #1976d2); outline-offset: -2px; }
.cv-ex-row .cv-light { width: 10px; height: 10px; vertical-align: middle; }
.cv-ex-tag { display: inline-block; font-size: 10px; line-height: 14px; padding: 0 5px; margin-left: 5px; border-radius: 7px;
  border: 1px solid var(--jp-border-color1, #999); color: var(--jp-ui-font-color2, #666); }
.cv-ex-stopped { border-color: var(--jp-error-color1, #d32f2f); color: var(--jp-error-color1, #d32f2f); }
.cv-ex-pick-tag { background: var(--jp-brand-color1, #1976d2); border-color: transparent; color: #fff; font-weight: 600; }
`;
