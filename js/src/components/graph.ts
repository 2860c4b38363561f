/**
 * Attention graph: prompt tokens as text; the selected token's edges (computed in the kernel).
 *
 * Built for prompts of any length:
 * - the tokens flow as text in a scroll box; the edges are drawn on one canvas that lies *behind* the
 *   box (the box is transparent, the text wears a halo in the background colour), so no arc hides a
 *   letter. The canvas covers the frame around the box, not its scrolled content, so redraws never
 *   change the box's scroll height.
 * - an edge whose other end is scrolled out of view ends at a labelled marker in a strip at the top or
 *   bottom edge of the box ("→ token 0 '<|im_start|>' 0.41"): strongest first, packed side by side
 *   without overlap, at most MARKER_CAP per edge then "+k more". A click on a marker scrolls the box
 *   to that token and highlights it briefly.
 * - "attends to" (outgoing, solid blue, filled arrowhead at the key) and "attended by" (incoming,
 *   dashed orange, open arrowhead at the selected token) have a legend.
 * - scrolling redraws only the arcs and markers, once per animation frame, from token positions
 *   cached per selection: the work per frame follows the number of edges, not of tokens.
 */
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

// ---------------------------------------------------------------- off-screen markers (pure)

/** "out": the selected token attends to it; "in": it attends to the selected token; "self": the selected token. */
export type Dir = "out" | "in" | "self";
export type Side = "above" | "below";
/** One end of an edge outside the visible box, shown as a labelled marker at the box's edge. */
export interface Marker { index: number; weight: number; dir: Dir; side: Side; label: string }
/** A token's vertical extent in the scroll box's content coordinates (offsetTop .. offsetTop + offsetHeight). */
export interface Span { top: number; bottom: number }

/** Markers shown per edge of the box before "+k more". */
export const MARKER_CAP = 4;
export const OUT_RGB = "25, 118, 210";
export const IN_RGB = "230, 97, 0";

/** Where a token lies against the visible window [viewTop, viewBottom] of the box: its middle decides;
 * null when it is in view. */
export function sideOf(s: Span, viewTop: number, viewBottom: number): Side | null {
  const mid = (s.top + s.bottom) / 2;
  return mid < viewTop ? "above" : mid > viewBottom ? "below" : null;
}

/** A token's text for a marker: newlines and tabs made visible, at most `max` characters (then …). */
export function markerText(s: string, max = 16): string {
  const t = Array.from(s === "" ? "∅" : s.replace(/\r/g, "␍").replace(/\n/g, "↵").replace(/\t/g, "⇥"));
  return t.length > max ? `${t.slice(0, max - 1).join("")}…` : t.join("");
}

/** "→ token 0 '<|im_start|>' 0.41" (attends to), "← token 12 ' sky' 0.20" (attended by), or the
 * selected token itself when it is out of view. The weight is the attention probability, 2 decimals. */
export function markerLabel(dir: Dir, index: number, text: string, weight: number): string {
  if (dir === "self") return `● token ${index} '${markerText(text)}' (selected)`;
  return `${dir === "out" ? "→" : "←"} token ${index} '${markerText(text)}' ${weight.toFixed(2)}`;
}

export const moreLabel = (k: number): string => `+${k} more`;

/** Order of markers on one edge of the box: the selected token first, then the strongest edges. */
function markerOrder(a: Marker, b: Marker): number {
  if ((a.dir === "self") !== (b.dir === "self")) return a.dir === "self" ? -1 : 1;
  return b.weight - a.weight || a.index - b.index || (a.dir < b.dir ? -1 : a.dir > b.dir ? 1 : 0);
}

/**
 * The ends of the selected token's edges that lie outside the visible window, as markers for the top
 * ("above") and bottom ("below") edges of the box, each side ordered for display. `span(i)` gives a
 * token's extent (null: not laid out, never a marker); `text(i)` its text. The selected token itself
 * gets a "self" marker when it is out of view (its edges to visible tokens then start there).
 */
export function offscreenMarkers(source: number, out: Edge[], incoming: Edge[], span: (i: number) => Span | null,
  viewTop: number, viewBottom: number, text: (i: number) => string): { above: Marker[]; below: Marker[] } {
  const above: Marker[] = [], below: Marker[] = [];
  const add = (index: number, weight: number, dir: Dir) => {
    const s = span(index);
    const side = s ? sideOf(s, viewTop, viewBottom) : null;
    if (side) (side === "above" ? above : below).push({ index, weight, dir, side, label: markerLabel(dir, index, text(index), weight) });
  };
  add(source, 1, "self");
  for (const e of out) if (e.index !== source) add(e.index, e.weight, "out");
  for (const e of incoming) if (e.index !== source) add(e.index, e.weight, "in");
  above.sort(markerOrder);
  below.sort(markerOrder);
  return { above, below };
}

/** Width estimate (CSS px) of a marker chip: its characters in the code font plus padding and border. */
export function chipWidth(label: string, charWidth: number): number {
  return Array.from(label).length * charWidth + 14;
}

/**
 * Markers that fit side by side in a strip `width` px wide (in order, `gap` px apart, at most `cap`),
 * keeping room for the "+k more" chip of width `moreWidth` whenever some stay hidden. The first marker
 * is always shown (it ellipsizes when even it is too wide); the rest are hidden in order.
 */
export function packMarkers(ms: Marker[], width: number, widthOf: (m: Marker) => number, moreWidth: number,
  cap = MARKER_CAP, gap = 4): { shown: Marker[]; hidden: Marker[] } {
  let used = 0, n = 0;
  for (; n < ms.length && n < cap; n++) {
    const w = widthOf(ms[n]) + (n ? gap : 0);
    const more = n < ms.length - 1 ? gap + moreWidth : 0; // someone after this one may stay hidden
    if (n > 0 && used + w + more > width) break;
    used += w;
  }
  return { shown: ms.slice(0, n), hidden: ms.slice(n) };
}

/** The arrowhead at `tip` of a line arriving from `from`: a filled triangle ("out") or an open chevron ("in"). */
function arrowHead(ctx: CanvasRenderingContext2D, tip: Pt, from: Pt, size: number, filled: boolean): void {
  let dx = tip.x - from.x, dy = tip.y - from.y;
  const d = Math.hypot(dx, dy) || 1;
  dx /= d; dy /= d;
  const bx = tip.x - dx * size, by = tip.y - dy * size, px = -dy * size * 0.55, py = dx * size * 0.55;
  ctx.beginPath();
  ctx.moveTo(bx + px, by + py);
  ctx.lineTo(tip.x, tip.y);
  ctx.lineTo(bx - px, by - py);
  if (filled) { ctx.closePath(); ctx.fill(); } else ctx.stroke();
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag: string, attrs: Record<string, string>): SVGElement {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

/** The legend's sample of one direction's line and arrowhead. */
function legendItem(dir: "out" | "in"): HTMLElement {
  const rgb = `rgb(${dir === "out" ? OUT_RGB : IN_RGB})`;
  const icon = svg("svg", { width: "30", height: "10", viewBox: "0 0 30 10", class: "cv-legend-arrow" });
  icon.append(svg("line", { x1: "1", y1: "5", x2: dir === "out" ? "22" : "27", y2: "5", stroke: rgb, "stroke-width": "2",
    ...(dir === "in" ? { "stroke-dasharray": "4 3" } : {}) }));
  icon.append(svg("path", dir === "out" ? { d: "M21,1 L29,5 L21,9 Z", fill: rgb } : { d: "M22,1 L29,5 L22,9", fill: "none", stroke: rgb, "stroke-width": "1.5" }));
  return h("span", { class: `cv-legend-item cv-legend-${dir}` }, icon as unknown as Node,
    dir === "out" ? "→ attends to" : "← attended by");
}

type Anchor = Pt & { chip: boolean };

export function mountGraph(el: HTMLElement, store: Store): () => void {
  const root = h("div", { class: "cv-graph", tabindex: "0" });
  const layerSel = h("select", { class: "cv-graph-layer", "aria-label": "layer" });
  const headSel = h("select", { class: "cv-graph-head", "aria-label": "head" });
  const thr = h("input", { class: "cv-threshold", type: "range", min: "0", max: "0.5", step: "0.005", "aria-label": "threshold" });
  const thrText = h("span", { class: "cv-muted" });
  const incoming = h("input", { class: "cv-incoming", type: "checkbox" });
  const info = h("div", { class: "cv-graph-info cv-muted" });
  const inLegend = legendItem("in");
  const legend = h("div", { class: "cv-legend cv-graph-legend" }, legendItem("out"), inLegend,
    h("span", { class: "cv-legend-unit", text: "· off-screen ends: markers at the edge (click)" }));
  const frame = h("div", { class: "cv-graph-frame" });
  const canvas = h("canvas", { class: "cv-edges" });
  const stripTop = h("div", { class: "cv-marker-strip cv-marker-top", "data-side": "above" });
  const stripBottom = h("div", { class: "cv-marker-strip cv-marker-bottom", "data-side": "below" });
  const probe = h("span", { class: "cv-marker cv-marker-probe", "aria-hidden": "true", text: "0".repeat(20) });
  const body = h("div", { class: "cv-graph-body" });
  const inner = h("div", { class: "cv-graph-inner" });
  body.append(inner);
  stripTop.append(probe);
  frame.append(canvas, stripTop, body, stripBottom);
  root.append(h("div", { class: "cv-header" }, h("span", { class: "cv-title", text: "Attention" }),
    h("label", {}, "layer ", layerSel), h("label", {}, "head ", headSel),
    h("label", {}, "threshold ", thr, thrText), h("label", {}, incoming, " attended by")), info, legend, frame);
  el.append(root);

  let spans: HTMLElement[] = [];
  let lit: HTMLElement[] = [];
  let scrolledTo: number | null = null;
  let frameReq = 0;
  /** The edges drawn now (null: nothing to draw). */
  let drawn: { src: number; out: Edge[]; inc: Edge[] } | null = null;
  /** Token extents in the box's content coordinates, read once per selection / resize (not per frame). */
  const geom = new Map<number, Span & { x: number }>();
  let markerKey = "";
  let anchors = new Map<string, Anchor>();
  let charWidth = 0;
  let canvasSize = "";
  let ctx: CanvasRenderingContext2D | null = null;
  let flashed: { el: HTMLElement; timer: ReturnType<typeof setTimeout> } | null = null;

  const tokenText = (i: number): string => store.data?.strings.prompt_tokens?.[i] ?? "";
  const place = (i: number): (Span & { x: number }) | null => {
    let g = geom.get(i);
    if (!g) {
      const s = spans[i];
      if (!s) return null;
      g = { x: s.offsetLeft + s.offsetWidth / 2, top: s.offsetTop, bottom: s.offsetTop + s.offsetHeight };
      geom.set(i, g);
    }
    return g;
  };

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

  /** The selection's state: classes, info text, data attributes; returns the edges to draw. */
  const update = (): typeof drawn => {
    const sel = store.sel, opts = store.opts;
    layerSel.value = sel.layer === null ? "" : String(sel.layer);
    headSel.value = sel.head === null ? "" : String(sel.head);
    thr.value = String(opts.threshold);
    thrText.textContent = ` ≥ ${fmt(opts.threshold)}`;
    incoming.checked = opts.incoming;
    inLegend.classList.toggle("cv-off", !opts.incoming);
    for (const s of lit) { s.classList.remove("cv-selected", "cv-key", "cv-query"); s.style.background = ""; }
    lit = [];
    root.dataset.token = sel.token === null ? "" : String(sel.token);
    root.dataset.layer = sel.layer === null ? "" : String(sel.layer);
    root.dataset.head = sel.head === null ? "" : String(sel.head);
    const p = store.data;
    if (!p) return null;
    if (p.meta.has_prompt_attention === false) {
      info.textContent = "no prompt attention in this trace (made with prompt_telemetry=False)";
      root.dataset.state = "none";
      return null;
    }
    if (sel.token === null || !spans[sel.token]) { info.textContent = "click a prompt token to see what it attends to"; root.dataset.edges = "[]"; return null; }
    const src = spans[sel.token];
    src.classList.add("cv-selected");
    if (scrolledTo !== sel.token && scrollIntoBody(body, src)) scrolledTo = sel.token;
    lit.push(src);
    // the kernel's answer, or one this view holds from earlier (what a view without its kernel serves)
    const e = store.edgesFor(sel.token, sel.layer, sel.head);
    const noAtt = noAttentionLayers(p.meta, "prompt", p.meta.n_layers);
    if (sel.layer !== null && (noAtt.has(sel.layer) || (edgesMatch(e, sel.token, sel.layer, sel.head) && e!.meta.no_attention))) {
      // a state-space / convolution block of a hybrid stack: nothing to draw, say why (no kernel query needed)
      info.textContent = `token ${sel.token} ${JSON.stringify(p.strings.prompt_tokens[sel.token])} · layer ${sel.layer} has no softmax attention ` +
        "(a state-space / linear-attention / convolution block) · pick a layer with attention, or all";
      root.dataset.state = "no_attention";
      root.dataset.edges = "[]";
      root.dataset.inEdges = "[]";
      return null;
    }
    const allLayers = noAtt.size ? `all (mean over the ${p.meta.n_layers - noAtt.size} attention layers)` : "all (mean)";
    const where = `layer ${sel.layer ?? allLayers}, head ${sel.head ?? "all (mean)"}`;
    if (!edgesMatch(e, sel.token, sel.layer, sel.head)) {
      info.textContent = `token ${sel.token} ${JSON.stringify(p.strings.prompt_tokens[sel.token])} · ${where} · ${store.waitingText(sel.layer, sel.head)}`;
      // "stale": the kernel is asked; "no_kernel": no kernel answers (a restored view, a static page)
      root.dataset.state = store.kernel === "silent" || store.kernel === "static" ? "no_kernel" : "stale";
      return null;
    }
    const outE = visibleEdges(e!.arrays.out_keys.data, e!.arrays.out_weights.data, opts.threshold);
    const inE = opts.incoming ? visibleEdges(e!.arrays.in_queries.data, e!.arrays.in_weights.data, opts.threshold) : [];
    const inPending = opts.incoming && e!.meta.incoming === false;
    root.dataset.edges = JSON.stringify(outE.map((x) => [x.index, Number(x.weight.toFixed(6))]));
    root.dataset.inEdges = JSON.stringify(inE.map((x) => [x.index, Number(x.weight.toFixed(6))]));
    root.dataset.state = "drawn";
    const light = (edges: Edge[], rgb: string, cls: string) => {
      const wmax = edges.reduce((m, x) => Math.max(m, x.weight), 0);
      for (const x of edges) {
        const t = spans[x.index];
        if (!t || t === src) continue;
        t.classList.add(cls);
        t.style.background = `rgba(${rgb}, ${(0.1 + 0.5 * (x.weight / (wmax || 1))).toFixed(3)})`;
        lit.push(t);
      }
    };
    light(outE, OUT_RGB, "cv-key");
    light(inE, IN_RGB, "cv-query");
    info.textContent = `token ${sel.token} ${JSON.stringify(p.strings.prompt_tokens[sel.token])} · ${where} · attends to ${outE.length} token(s)` +
      (opts.incoming ? (inPending ? ", incoming: waiting for the kernel…" : `, attended by ${inE.length}`) : "") + ` with weight ≥ ${fmt(opts.threshold)}`;
    if (store.pendingSince !== null) {
      store.lastRoundTripMs = now() - store.pendingSince;
      store.pendingSince = null;
      root.dataset.roundtripMs = store.lastRoundTripMs.toFixed(1);
    }
    return { src: sel.token, out: outE, inc: inE };
  };

  const chip = (m: Marker): HTMLElement => h("button", {
    type: "button", class: `cv-marker cv-marker-${m.dir}`, "data-token": String(m.index), "data-weight": String(m.weight),
    "data-dir": m.dir, "data-side": m.side, title: `${m.label} · click to scroll there`, text: m.label,
  });
  const moreChip = (hidden: Marker[], side: Side): HTMLElement => h("button", {
    type: "button", class: "cv-marker cv-marker-more", "data-token": String(hidden[0].index), "data-side": side,
    "data-count": String(hidden.length), text: moreLabel(hidden.length),
    title: hidden.slice(0, 24).map((m) => m.label).join("\n") + (hidden.length > 24 ? `\n… and ${hidden.length - 24} more` : "") +
      "\n(click: scroll to the strongest of them)",
  });

  /** Lay the markers out in their strips (DOM only when they changed) and note where each one's arc ends. */
  const placeMarkers = (above: Marker[], below: Marker[]) => {
    if (!charWidth && probe.offsetWidth > 0) charWidth = probe.offsetWidth / 20;
    const cw = charWidth || 7;
    const pack = (ms: Marker[], strip: HTMLElement) =>
      packMarkers(ms, strip.clientWidth || 600, (m) => chipWidth(m.label, cw), chipWidth(moreLabel(ms.length), cw));
    const top = pack(above, stripTop), bottom = pack(below, stripBottom);
    const key = [top, bottom].map((p) => p.shown.map((m) => `${m.dir}${m.index}:${m.weight}`).join(",") + `+${p.hidden.length}`).join("|");
    if (key === markerKey) return;
    markerKey = key;
    const fill = (strip: HTMLElement, p: { shown: Marker[]; hidden: Marker[] }, side: Side) => {
      const kids: Node[] = p.shown.map(chip);
      if (p.hidden.length) kids.push(moreChip(p.hidden, side));
      strip.replaceChildren(...(strip === stripTop ? [probe] : []), ...kids);
    };
    fill(stripTop, top, "above");
    fill(stripBottom, bottom, "below");
    root.dataset.markers = JSON.stringify([...top.shown, ...bottom.shown].map((m) => ({ token: m.index, weight: m.weight, dir: m.dir, side: m.side })));
    root.dataset.markersHidden = String(top.hidden.length + bottom.hidden.length);
    // where each arc ends: the middle of its chip's edge that faces the box (a hidden end: the "+k more" chip)
    anchors = new Map();
    const note = (strip: HTMLElement, p: { shown: Marker[]; hidden: Marker[] }, side: Side) => {
      const chips = strip.querySelectorAll<HTMLElement>(".cv-marker:not(.cv-marker-probe)");
      const y = side === "above" ? strip.offsetTop + strip.offsetHeight : strip.offsetTop;
      const at = (c: HTMLElement): Anchor => ({ x: strip.offsetLeft + c.offsetLeft + c.offsetWidth / 2, y, chip: true });
      p.shown.forEach((m, i) => anchors.set(`${m.dir}${m.index}`, at(chips[i])));
      if (p.hidden.length) { const a = at(chips[chips.length - 1]); for (const m of p.hidden) anchors.set(`${m.dir}${m.index}`, a); } // one shared end
    };
    note(stripTop, top, "above");
    note(stripBottom, bottom, "below");
  };

  /** Markers and arcs for the current scroll position (on every selection and once per scrolled frame). */
  const paint = () => {
    const laid = body.clientHeight > 0;
    const scrolls = laid && body.scrollHeight > body.clientHeight + 1;
    if (frame.classList.contains("cv-scrolls") !== scrolls) { frame.classList.toggle("cv-scrolls", scrolls); markerKey = ""; }
    const viewTop = body.scrollTop, viewBottom = viewTop + body.clientHeight;
    const m = drawn && scrolls ? offscreenMarkers(drawn.src, drawn.out, drawn.inc, place, viewTop, viewBottom, tokenText) : { above: [], below: [] };
    placeMarkers(m.above, m.below);

    const W = frame.clientWidth, H = frame.clientHeight;
    if (!(W > 0 && H > 0)) return;
    if (`${W}x${H}` !== canvasSize || !ctx) { ctx = sizeCanvas(canvas, W, H); canvasSize = `${W}x${H}`; }
    if (!ctx) return;
    ctx.clearRect(0, 0, W, H);
    if (!drawn) return;
    const ox = body.offsetLeft + body.clientLeft - body.scrollLeft, oy = body.offsetTop + body.clientTop - viewTop;
    const anchor = (i: number, dir: Dir): Anchor | null => {
      const a = anchors.get(`${dir}${i}`);
      if (a) return a;
      const g = place(i);
      return g ? { x: ox + g.x, y: oy + g.top - 1, chip: false } : null; // just above the text: arrowheads stay visible
    };
    const s = anchor(drawn.src, "self");
    if (!s) return;
    const c = ctx;
    const wOut = drawn.out.reduce((mx, x) => Math.max(mx, x.weight), 0);
    const wIn = drawn.inc.reduce((mx, x) => Math.max(mx, x.weight), 0);
    type Arc = { a: Anchor; b: Anchor; w: number; dir: "out" | "in" };
    const arcs: Arc[] = [];
    for (const x of drawn.out) {
      const b = x.index === drawn.src ? null : anchor(x.index, "out");
      if (b) arcs.push({ a: s, b, w: x.weight, dir: "out" });
    }
    for (const x of drawn.inc) {
      const a = x.index === drawn.src ? null : anchor(x.index, "in");
      if (a) arcs.push({ a, b: s, w: x.weight, dir: "in" });
    }
    // strongest first to pick one arc per marker ("+k more" gathers several ends: its strongest),
    // then drawn strongest last, so it lies on top of the weaker ones
    arcs.sort((p, q) => q.w - p.w);
    const seenChips = new Set<Anchor>();
    const keep = arcs.filter(({ a, b, dir }) => {
      if (a.chip && b.chip) return false; // both ends out of view: the markers say it
      const other = dir === "out" ? b : a; // the end that is not the selected token
      if (!other.chip) return true;
      if (seenChips.has(other)) return false;
      seenChips.add(other);
      return true;
    });
    for (let i = keep.length - 1; i >= 0; i--) {
      const { a, b, w, dir } = keep[i];
      const st = edgeStyle(w, dir === "out" ? wOut : wIn);
      const chipEnd = a.chip ? a : b.chip ? b : null;
      const ctl = chipEnd ? { x: chipEnd.x, y: (a.y + b.y) / 2 } : arcControl(a, b);
      const colour = `rgba(${dir === "out" ? OUT_RGB : IN_RGB}, ${st.alpha.toFixed(3)})`;
      c.strokeStyle = colour;
      c.fillStyle = colour;
      c.lineWidth = st.width;
      c.setLineDash(dir === "in" ? [5, 4] : []);
      c.beginPath(); c.moveTo(a.x, a.y); c.quadraticCurveTo(ctl.x, ctl.y, b.x, b.y); c.stroke();
      c.setLineDash([]);
      c.lineWidth = Math.max(1.25, st.width * 0.6);
      arrowHead(c, b, ctl.x === b.x && ctl.y === b.y ? a : ctl, 5 + 1.5 * st.width, dir === "out");
    }
  };

  const draw = () => {
    geom.clear();
    markerKey = "";
    drawn = update();
    paint();
  };

  const raf = (f: () => void): number =>
    (typeof requestAnimationFrame === "function" ? requestAnimationFrame(f) : setTimeout(f, 16)) as unknown as number;
  const schedule = () => {
    if (frameReq) return;
    frameReq = raf(() => { frameReq = 0; paint(); });
  };

  /** Scroll the box so token i is in its middle, and highlight it for a moment. */
  const goTo = (i: number) => {
    const s = spans[i];
    if (!s) return;
    body.scrollTop = Math.max(0, s.offsetTop + s.offsetHeight / 2 - body.clientHeight / 2);
    if (flashed) { clearTimeout(flashed.timer); flashed.el.classList.remove("cv-flash"); }
    void s.offsetWidth; // restart the animation
    s.classList.add("cv-flash");
    flashed = { el: s, timer: setTimeout(() => { s.classList.remove("cv-flash"); flashed = null; }, 1600) };
    schedule();
  };

  body.addEventListener("scroll", schedule, { passive: true });
  const onMarker = (ev: Event) => {
    const m = (ev.target as HTMLElement).closest?.(".cv-marker") as HTMLElement | null;
    if (m && m.dataset.token !== undefined) { goTo(Number(m.dataset.token)); ev.stopPropagation(); }
  };
  stripTop.addEventListener("click", onMarker);
  stripBottom.addEventListener("click", onMarker);
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
    if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement || ev.target instanceof HTMLButtonElement) return;
    if (!spans.length) return;
    const cur = store.sel.token ?? -1;
    store.select({ token: Math.min(spans.length - 1, Math.max(0, cur + (ev.key === "ArrowRight" ? 1 : -1))) });
    ev.preventDefault();
  });

  store.on(["data"], () => { build(); draw(); });
  store.on(["selection", "edges", "options"], draw);
  store.onKernel(draw);
  const stopResize = observeResize(root, () => { charWidth = 0; draw(); });
  build();
  draw();
  return () => {
    stopResize();
    if (frameReq) { (typeof cancelAnimationFrame === "function" ? cancelAnimationFrame : clearTimeout)(frameReq as any); frameReq = 0; }
    if (flashed) clearTimeout(flashed.timer);
    root.remove();
  };
}
