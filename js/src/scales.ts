/** Colour scales, metric definitions and number formatting: pure functions, no DOM. */

export type RGB = [number, number, number];

/** From calm to alarming (pale blue -> yellow -> orange -> red): "worse" is warmer. */
export const RAMP_ALARM: RGB[] = [
  [198, 219, 239], [255, 237, 160], [254, 178, 76], [240, 59, 32], [165, 0, 38],
];
/** Perceptually ordered dark-blue -> green -> yellow (viridis-like) for the heatmap. */
export const RAMP_HEAT: RGB[] = [
  [68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37],
];
/** Diverging blue (below normal) -> near-white (normal) -> red (above normal), for z-scores. */
export const RAMP_DIVERGE: RGB[] = [
  [33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43],
];

/** Linear interpolation along colour stops, t in [0, 1] (clamped). */
export function interpolate(stops: RGB[], t: number): RGB {
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const a = stops[i], b = stops[i + 1];
  return [0, 1, 2].map((k) => Math.round(a[k] + (b[k] - a[k]) * f)) as RGB;
}

export function css(c: RGB, alpha = 1): string {
  return alpha >= 1 ? `rgb(${c[0]}, ${c[1]}, ${c[2]})` : `rgba(${c[0]}, ${c[1]}, ${c[2]}, ${alpha})`;
}

export interface MetricDef {
  /** Field name in the Trace timeline (and the payload). */
  key: string;
  label: string;
  unit: string;
  /** True when a larger value means the model was less sure. */
  higherIsWorse: boolean;
  /** Fixed domain (probabilities), else derived from the data. */
  fixed?: [number, number];
  log?: boolean;
}

export const METRICS: MetricDef[] = [
  { key: "entropy", label: "entropy", unit: "bits", higherIsWorse: true },
  { key: "surprisal", label: "surprisal", unit: "bits", higherIsWorse: true },
  { key: "top_k_margin", label: "margin (p1 − p2)", unit: "probability", higherIsWorse: false, fixed: [0, 1] },
  { key: "voter_agreement", label: "top-k mass", unit: "probability", higherIsWorse: false, fixed: [0, 1] },
  { key: "perplexity", label: "perplexity", unit: "choices (2^bits)", higherIsWorse: true, log: true },
  { key: "max_prob", label: "max probability", unit: "probability", higherIsWorse: false, fixed: [0, 1] },
];

export function metricDef(key: string): MetricDef {
  return METRICS.find((m) => m.key === key) ?? METRICS[0];
}

export interface Domain { lo: number; hi: number; log: boolean }

/** Domain of a metric over the finite values given (several arrays may share one scale). */
export function metricDomain(def: MetricDef, ...arrays: ArrayLike<number>[]): Domain {
  if (def.fixed) return { lo: def.fixed[0], hi: def.fixed[1], log: false };
  let lo = Infinity, hi = -Infinity;
  for (const a of arrays) for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (Number.isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
  }
  if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
  if (def.log) { lo = Math.max(1, lo); hi = Math.max(hi, lo * 2); return { lo, hi, log: true }; }
  lo = Math.min(0, lo);
  if (hi - lo < 1e-9) hi = lo + 1;
  return { lo, hi, log: false };
}

/** Position of v in the domain, in [0, 1]; NaN for a non-finite value. */
export function normalize(v: number, d: Domain): number {
  if (!Number.isFinite(v)) return NaN;
  const t = d.log ? (Math.log(Math.max(v, d.lo)) - Math.log(d.lo)) / (Math.log(d.hi) - Math.log(d.lo))
    : (v - d.lo) / (d.hi - d.lo);
  return Math.min(1, Math.max(0, t));
}

/** Badness in [0, 1] of a metric value: 1 = least sure. */
export function badness(v: number, def: MetricDef, d: Domain): number {
  const t = normalize(v, d);
  return def.higherIsWorse ? t : 1 - t;
}

/** Background colour of a token for a metric value ("transparent" when there is none). */
export function tokenColor(v: number, def: MetricDef, d: Domain): string {
  const b = badness(v, def, d);
  if (Number.isNaN(b)) return "transparent";
  return css(interpolate(RAMP_ALARM, b), 0.35 + 0.6 * b);
}

/** Background for a risk of a wrong answer in [0, 1]: calm to alarming ("transparent" when unknown). */
export function riskColor(risk: number | null | undefined): string {
  if (risk === null || risk === undefined || !Number.isFinite(risk)) return "transparent";
  const t = Math.min(1, Math.max(0, risk));
  return css(interpolate(RAMP_ALARM, t), 0.35 + 0.55 * t);
}

/** Colour of a z-score on the diverging scale clipped at ±limit ("#888" when it is not finite). */
export function zColor(z: number, limit: number): string {
  if (!Number.isFinite(z)) return "#888";
  return css(interpolate(RAMP_DIVERGE, (z / (limit > 0 ? limit : 1) + 1) / 2));
}

/** Short human number: 3 significant digits, no exponent for ordinary magnitudes. */
export function fmt(v: number): string {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "−∞";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return String(Number(v.toPrecision(3)));
}

/** Readable form of a token piece: visible spaces at the edges are kept, newlines shown. */
export function showToken(s: string): string {
  if (s === "") return "∅";
  return s.replace(/\n/g, "↵\n").replace(/\t/g, "⇥");
}
