/** Attention graph: prompt tokens as text; the selected token's edges (computed in the kernel). */
import { h, observeResize, sizeCanvas } from "../dom";
import { noAttentionLayers, type Payload } from "../payload";
import { fmt, showToken } from "../scales";
import { now, type Store } from "../store";

export interface Edge { index: number; weight: number }

/** Edges at or above the threshold, in index order (pure). */
export function visibleEdges(index: ArrayLike<number>, weights: ArrayLike<number>, threshold: number): Edge[] {
  const out: Edge[] = [];
  for (let i = 0; i < index.length; i++) if (weights[i] >= threshold) out.push({ index: index[i], weight: weights[i] });
  return out;
}

/** Stroke width (CSS px) and opacity of an edge relative to the strongest one drawn. */
export function edgeStyle(w: number, wmax: number): { width: number; alpha: number } {
  const t = wmax > 0 ? Math.min(1, w / wmax) : 0;
  return { width: 0.75 + 3.25 * t, alpha: 0.2 + 0.8 * t };
}

export interface Pt { x: number; y: number }

/** Control point of the arc from a to b: bulges upward, more for longer edges. */
export function arcControl(a: Pt, b: Pt): Pt {
  const dx = b.x - a.x, dy = b.y - a.y;
  const d = Math.hypot(dx, dy);
  return { x: (a.x + b.x) / 2, y: Math.min(a.y, b.y) - Math.min(60, 0.25 * d + 8) };
}

/** True when the edges payload answers the current selection (not a stale query). */
export function edgesMatch(e: Payload | null, token: number | null, layer: number | null, head: number | null): boolean {
  if (!e || token === null) return false;
  const m = e.meta;
  return m.token === token && (m.layer ?? null) === layer && (m.head ?? null) === head;
}

/** Scroll a container (never the page) so that a child is visible. */
export function scrollIntoBody(body: HTMLElement, child: HTMLElement): boolean {
  const top = child.offsetTop, bottom = top + child.offsetHeight;
  if (body.clientHeight === 0) return false; // not laid out yet
  if (top < body.scrollTop || bottom > body.scrollTop + body.clientHeight) body.scrollTop = Math.max(0, top - body.clientHeight / 2);
  return true;
}

export function mountGraph(el: HTMLElement, store: Store): () => void {
  const root = h("div", { class: "cv-graph", tabindex: "0" });
  const layerSel = h("select", { class: "cv-graph-layer", "aria-label": "layer" });
  const headSel = h("select", { class: "cv-graph-head", "aria-label": "head" });
  const thr = h("input", { class: "cv-threshold", type: "range", min: "0", max: "0.5", step: "0.005", "aria-label": "threshold" });
  const thrText = h("span", { class: "cv-muted" });
  const incoming = h("input", { class: "cv-incoming", type: "checkbox" });
  const info = h("div", { class: "cv-graph-info cv-muted" });
  const body = h("div", { class: "cv-graph-body" });
  const inner = h("div", { class: "cv-graph-inner" });
  const canvas = h("canvas", { class: "cv-edges" });
  inner.append(canvas);
  body.append(inner);
  root.append(h("div", { class: "cv-header" }, h("span", { class: "cv-title", text: "Attention" }),
    h("label", {}, "layer ", layerSel), h("label", {}, "head ", headSel),
    h("label", {}, "threshold ", thr, thrText), h("label", {}, incoming, " attended by")), info, body);
  el.append(root);

  let spans: HTMLElement[] = [];
  let lit: HTMLElement[] = [];
  let scrolledTo: number | null = null;
  let frame = 0;

  const build = () => {
    const p = store.data;
    for (const s of spans) s.remove();
    spans = [];
    if (!p) { info.textContent = "waiting for the trace…"; return; }
    const L = p.meta.n_layers, H = p.meta.n_heads;
    const noAtt = noAttentionLayers(p.meta, "prompt", L);
    layerSel.replaceChildren(h("option", { value: "", text: "all" }),
      ...Array.from({ length: L }, (_, i) => h("option", { value: String(i), text: noAtt.has(i) ? `${i} (no attention)` : String(i) })));
    headSel.replaceChildren(h("option", { value: "", text: "all" }), ...Array.from({ length: H }, (_, i) => h("option", { value: String(i), text: String(i) })));
    const frag = document.createDocumentFragment();
    spans = (p.strings.prompt_tokens ?? []).map((t, i) => h("span", { class: "cv-tok cv-prompt", "data-token": String(i), text: showToken(t) }));
    spans.forEach((s) => frag.append(s));
    inner.append(frag);
    root.dataset.tokens = String(spans.length);
  };

  const draw = () => {
    const sel = store.sel, opts = store.opts;
    layerSel.value = sel.layer === null ? "" : String(sel.layer);
    headSel.value = sel.head === null ? "" : String(sel.head);
    thr.value = String(opts.threshold);
    thrText.textContent = ` ≥ ${fmt(opts.threshold)}`;
    incoming.checked = opts.incoming;
    for (const s of lit) { s.classList.remove("cv-selected", "cv-key", "cv-query"); s.style.background = ""; }
    lit = [];
    // the canvas covers only the visible window of the scrolled text (long prompts stay cheap)
    const top = body.scrollTop;
    const W = inner.clientWidth || 600, Hh = Math.max(1, Math.min(inner.scrollHeight || 100, body.clientHeight || 400));
    canvas.style.top = `${top}px`;
    const ctx = sizeCanvas(canvas, W, Hh);
    if (ctx) { ctx.clearRect(0, 0, W, Hh); ctx.translate(0, -top); }
    root.dataset.token = sel.token === null ? "" : String(sel.token);
    root.dataset.layer = sel.layer === null ? "" : String(sel.layer);
    root.dataset.head = sel.head === null ? "" : String(sel.head);
    const p = store.data;
    if (!p) return;
    if (p.meta.has_prompt_attention === false) {
      info.textContent = "no prompt attention in this trace (made with prompt_telemetry=False)";
      root.dataset.state = "none";
      return;
    }
    if (sel.token === null || !spans[sel.token]) { info.textContent = "click a prompt token to see what it attends to"; root.dataset.edges = "[]"; return; }
    const src = spans[sel.token];
    src.classList.add("cv-selected");
    if (scrolledTo !== sel.token && scrollIntoBody(body, src)) scrolledTo = sel.token;
    lit.push(src);
    const e = store.edges;
    const noAtt = noAttentionLayers(p.meta, "prompt", p.meta.n_layers);
    if (sel.layer !== null && (noAtt.has(sel.layer) || (edgesMatch(e, sel.token, sel.layer, sel.head) && e!.meta.no_attention))) {
      // a state-space / convolution block of a hybrid stack: nothing to draw, say why (no kernel query needed)
      info.textContent = `token ${sel.token} ${JSON.stringify(p.strings.prompt_tokens[sel.token])} · layer ${sel.layer} has no softmax attention ` +
        "(a state-space / linear-attention / convolution block) · pick a layer with attention, or all";
      root.dataset.state = "no_attention";
      root.dataset.edges = "[]";
      root.dataset.inEdges = "[]";
      return;
    }
    const allLayers = noAtt.size ? `all (mean over the ${p.meta.n_layers - noAtt.size} attention layers)` : "all (mean)";
    const where = `layer ${sel.layer ?? allLayers}, head ${sel.head ?? "all (mean)"}`;
    if (!edgesMatch(e, sel.token, sel.layer, sel.head)) {
      const why = store.model.get("_static") ? "this static page holds the edges of the exported selection only (run the notebook for others)" : "waiting for the kernel…";
      info.textContent = `token ${sel.token} ${JSON.stringify(p.strings.prompt_tokens[sel.token])} · ${where} · ${why}`;
      root.dataset.state = "stale";
      return;
    }
    const outE = visibleEdges(e!.arrays.out_keys.data, e!.arrays.out_weights.data, opts.threshold);
    const inE = opts.incoming ? visibleEdges(e!.arrays.in_queries.data, e!.arrays.in_weights.data, opts.threshold) : [];
    const inPending = opts.incoming && e!.meta.incoming === false;
    root.dataset.edges = JSON.stringify(outE.map((x) => [x.index, Number(x.weight.toFixed(6))]));
    root.dataset.inEdges = JSON.stringify(inE.map((x) => [x.index, Number(x.weight.toFixed(6))]));
    root.dataset.state = "drawn";
    const centre = (s: HTMLElement): Pt => ({ x: s.offsetLeft + s.offsetWidth / 2, y: s.offsetTop + 2 });
    const a = centre(src);
    const paint = (edges: Edge[], rgb: string, cls: string) => {
      const wmax = edges.reduce((m, x) => Math.max(m, x.weight), 0);
      for (const x of edges) {
        const t = spans[x.index];
        if (!t) continue;
        const st = edgeStyle(x.weight, wmax);
        if (t !== src) { t.classList.add(cls); t.style.background = `rgba(${rgb}, ${(0.1 + 0.5 * (x.weight / (wmax || 1))).toFixed(3)})`; lit.push(t); }
        if (!ctx || t === src) continue;
        const b = centre(t), c = arcControl(a, b);
        ctx.strokeStyle = `rgba(${rgb}, ${st.alpha.toFixed(3)})`;
        ctx.lineWidth = st.width;
        ctx.beginPath(); ctx.moveTo(a.x, a.y); ctx.quadraticCurveTo(c.x, c.y, b.x, b.y); ctx.stroke();
      }
    };
    paint(outE, "25, 118, 210", "cv-key");
    paint(inE, "230, 97, 0", "cv-query");
    info.textContent = `token ${sel.token} ${JSON.stringify(p.strings.prompt_tokens[sel.token])} · ${where} · attends to ${outE.length} token(s)` +
      (opts.incoming ? (inPending ? ", incoming: waiting for the kernel…" : `, attended by ${inE.length}`) : "") + ` with weight ≥ ${fmt(opts.threshold)}`;
    if (store.pendingSince !== null) {
      store.lastRoundTripMs = now() - store.pendingSince;
      store.pendingSince = null;
      root.dataset.roundtripMs = store.lastRoundTripMs.toFixed(1);
    }
  };

  body.addEventListener("scroll", () => {
    if (frame) return;
    const raf = typeof requestAnimationFrame === "function" ? requestAnimationFrame : (f: () => void) => setTimeout(f, 16);
    frame = raf(() => { frame = 0; draw(); }) as unknown as number;
  });
  inner.addEventListener("click", (ev) => {
    const t = (ev.target as HTMLElement).closest?.(".cv-tok") as HTMLElement | null;
    if (t && t.dataset.token !== undefined) store.select({ token: Number(t.dataset.token) });
  });
  layerSel.addEventListener("change", () => store.select({ layer: layerSel.value === "" ? null : Number(layerSel.value) }));
  headSel.addEventListener("change", () => store.select({ head: headSel.value === "" ? null : Number(headSel.value) }));
  thr.addEventListener("input", () => store.setOptions({ threshold: Number(thr.value) }));
  incoming.addEventListener("change", () => store.setOptions({ incoming: incoming.checked }));
  root.addEventListener("keydown", (ev) => {
    if (ev.key !== "ArrowLeft" && ev.key !== "ArrowRight") return;
    if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement) return;
    if (!spans.length) return;
    const cur = store.sel.token ?? -1;
    store.select({ token: Math.min(spans.length - 1, Math.max(0, cur + (ev.key === "ArrowRight" ? 1 : -1))) });
    ev.preventDefault();
  });

  store.on(["data"], () => { build(); draw(); });
  store.on(["selection", "edges", "options"], draw);
  const stopResize = observeResize(root, draw);
  build();
  draw();
  return () => { stopResize(); root.remove(); };
}
