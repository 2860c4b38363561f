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

/** Body attributes whose change means the page's theme changed: JupyterLab sets data-jp-theme-light
 * and data-jp-theme-name on a theme switch; VS Code notebooks set data-vscode-theme-kind (and a
 * vscode-light / vscode-dark body class). */
export const THEME_ATTRIBUTES = ["data-jp-theme-light", "data-jp-theme-name", "data-vscode-theme-kind", "class"];

/** What identifies the current theme (changes of anything else on <body> are ignored). */
export function themeKey(): string {
  const b = typeof document !== "undefined" ? document.body : null;
  let dark = "";
  try { dark = typeof window !== "undefined" && window.matchMedia?.("(prefers-color-scheme: dark)")?.matches ? "dark" : "light"; } catch { dark = ""; }
  if (!b) return dark;
  const vs = Array.from(b.classList).filter((c) => c.startsWith("vscode-")).sort().join(" ");
  return [b.getAttribute("data-jp-theme-light"), b.getAttribute("data-jp-theme-name"), b.getAttribute("data-vscode-theme-kind"), vs, dark].join("|");
}

/**
 * Call `cb` when the page's theme changes, so canvases drawn with theme colours are redrawn at once
 * (not at the next click): a MutationObserver on <body>'s theme attributes (JupyterLab, VS Code) and
 * the `prefers-color-scheme` media query (Colab, VS Code, plain pages). `cb` runs at once and again on
 * the next frame, in case the new theme's stylesheet lands a frame after its attributes. Returns the
 * cleanup (disconnects the observer and the media listener).
 */
export function observeTheme(cb: () => void): () => void {
  let key = themeKey();
  let frame = 0;
  const raf = typeof requestAnimationFrame === "function" ? requestAnimationFrame : null;
  const check = () => {
    const k = themeKey();
    if (k === key) return;
    key = k;
    cb();
    if (raf) {
      if (frame) cancelAnimationFrame(frame);
      frame = raf(() => { frame = 0; cb(); });
    }
  };
  const stops: Array<() => void> = [];
  if (typeof MutationObserver !== "undefined" && typeof document !== "undefined" && document.body) {
    const mo = new MutationObserver(check);
    mo.observe(document.body, { attributes: true, attributeFilter: THEME_ATTRIBUTES });
    stops.push(() => mo.disconnect());
  }
  try {
    const mq = typeof window !== "undefined" && typeof window.matchMedia === "function" ? window.matchMedia("(prefers-color-scheme: dark)") : null;
    if (mq) {
      if (typeof mq.addEventListener === "function") {
        mq.addEventListener("change", check);
        stops.push(() => mq.removeEventListener("change", check));
      } else if (typeof (mq as any).addListener === "function") { // Safari < 14
        (mq as any).addListener(check);
        stops.push(() => (mq as any).removeListener(check));
      }
    }
  } catch { /* no media queries: attributes only */ }
  return () => {
    for (const s of stops) s();
    if (frame) { cancelAnimationFrame(frame); frame = 0; }
  };
}
