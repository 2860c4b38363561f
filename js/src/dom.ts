/** Tiny DOM helpers shared by the components. */

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

/** Size a canvas for the device pixel ratio and return its 2-D context scaled to CSS pixels. */
export function sizeCanvas(c: HTMLCanvasElement, width: number, height: number): CanvasRenderingContext2D | null {
  const dpr = (typeof window !== "undefined" && window.devicePixelRatio) || 1;
  c.width = Math.max(1, Math.round(width * dpr));
  c.height = Math.max(1, Math.round(height * dpr));
  c.style.width = `${width}px`;
  c.style.height = `${height}px`;
  let ctx: CanvasRenderingContext2D | null = null;
  try { ctx = c.getContext("2d"); } catch { ctx = null; }
  if (ctx) ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}

/** A theme colour from Jupyter's CSS variables, with a fallback outside Jupyter. */
export function themeColor(el: Element, name: string, fallback: string): string {
  try {
    const v = getComputedStyle(el).getPropertyValue(name).trim();
    return v || fallback;
  } catch { return fallback; }
}

/** Width available to a component (its laid-out width, else a default for detached renders). */
export function widthOf(el: HTMLElement, fallback = 600): number {
  return el.clientWidth > 0 ? el.clientWidth : fallback;
}

export function observeResize(el: HTMLElement, cb: () => void): () => void {
  if (typeof ResizeObserver === "undefined") return () => {};
  let last = -1;
  const ro = new ResizeObserver(() => {
    const w = el.clientWidth;
    if (w !== last) { last = w; cb(); }
  });
  ro.observe(el);
  return () => ro.disconnect();
}
