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
  /** Field name in the Trace timeline (and the payload), or the heatmap value. */
  key: string;
  label: string;
  unit: string;
  /** True when a larger value means the model was less sure. */
  higherIsWorse: boolean;
  /** The colour domain, in the unit: fixed per metric, never derived from the data, so one colour
   * means one number in every step, trace and view. Values outside it clip to the end colour. */
  domain: [number, number];
  log?: boolean;
  /** The metric can go below / above the domain (the legend then says "≤ lo" / "≥ hi" clipped). */
  clipLo?: boolean;
  clipHi?: boolean;
  /** Why the domain is what it is (the legend's tooltip). */
  basis: string;
}

/*
 * The fixed domains. The caps are chosen from what each metric can reach, not from any trace:
 * - entropy: 0..8 bits. The ceiling is log2 of the vocabulary (~15-17 bits for 32k-150k tokens) but a
 *   next-token entropy above 8 bits (as unsure as a uniform pick among 256 tokens) is rare and already
 *   alarming; the health flag's 4-bit line sits at the middle of the ramp. Above 8 clips to the top colour.
 * - surprisal: 0..16 bits, i.e. down to p = 1/65536, about log2 of a typical vocabulary; it is
 *   unbounded in theory (a token the model all but excluded), so values above 16 clip.
 * - perplexity = 2^entropy: 1..256 on a log scale, the same cap as entropy (so both paint alike).
 * - margin, top-k mass, max probability, concentration, sink: probabilities, 0..1 exactly.
 * - attention entropy: 0..10 bits = a uniform row over 1024 keys (log2 of the key count bounds it;
 *   a fixed cap keeps traces of different lengths comparable). Longer, flatter rows clip.
 * - basin (middle-third mass ÷ other mass): a ratio, log scale 0.01..100, i.e. the middle third gets
 *   1 % .. 99 % of the mass, 1 = as much as the rest; beyond either end clips.
 * - logit-lens entropy: 0..16 bits. It is the same quantity as the token entropy, but the lens decodes
 *   intermediate layers whose distributions are close to uniform over the vocabulary (up to log2 V,
 *   ~15-17 bits), so the cap is the top of that range rather than 8 (which would clip every early layer).
 */
export const METRICS: MetricDef[] = [
  { key: "entropy", label: "entropy", unit: "bits", higherIsWorse: true, domain: [0, 8], clipHi: true,
    basis: "next-token entropy; 8 bits = as unsure as a uniform pick among 256 tokens" },
  { key: "surprisal", label: "surprisal", unit: "bits", higherIsWorse: true, domain: [0, 16], clipHi: true,
    basis: "−log2 p of the token; 16 bits = p of 1/65536, about log2 of a vocabulary" },
  { key: "top_k_margin", label: "margin (p1 − p2)", unit: "probability", higherIsWorse: false, domain: [0, 1],
    basis: "a difference of two probabilities" },
  { key: "voter_agreement", label: "top-k mass", unit: "probability", higherIsWorse: false, domain: [0, 1],
    basis: "a sum of probabilities" },
  { key: "perplexity", label: "perplexity", unit: "choices (2^bits)", higherIsWorse: true, log: true, domain: [1, 256], clipHi: true,
    basis: "2^entropy, capped like entropy at 2^8 = 256 choices" },
  { key: "max_prob", label: "max probability", unit: "probability", higherIsWorse: false, domain: [0, 1],
    basis: "a probability" },
];

/** The heatmap's values (heads and the logit lens), with their fixed domains. */
export const HEAT_METRICS: Record<"entropy" | "concentration" | "sink" | "basin" | "lens_entropy", MetricDef> = {
  entropy: { key: "entropy", label: "attention entropy", unit: "bits", higherIsWorse: true, domain: [0, 10], clipHi: true,
    basis: "10 bits = a uniform row over 1024 keys (the key count bounds it: log2 of the keys)" },
  concentration: { key: "concentration", label: "concentration (max weight)", unit: "probability", higherIsWorse: false, domain: [0, 1],
    basis: "an attention weight" },
  sink: { key: "sink", label: "sink (attention to token 0)", unit: "probability", higherIsWorse: false, domain: [0, 1],
    basis: "an attention weight" },
  basin: { key: "basin", label: "basin (middle ÷ other keys)", unit: "ratio", higherIsWorse: false, log: true, domain: [0.01, 100],
    clipLo: true, clipHi: true, basis: "middle third gets 1 % .. 99 % of the mass; 1 = as much as the other keys; < 0.3 ignores the middle" },
  lens_entropy: { key: "lens_entropy", label: "lens entropy", unit: "bits", higherIsWorse: true, domain: [0, 16], clipHi: true,
    basis: "entropy of the vocabulary distribution decoded after each layer; 16 bits ≈ uniform over a 65k vocabulary" },
};

export function metricDef(key: string): MetricDef {
  return METRICS.find((m) => m.key === key) ?? METRICS[0];
}

export interface Domain { lo: number; hi: number; log: boolean }

/** The metric's fixed colour domain: the same for every trace, step and view (never the data's range). */
export function metricDomain(def: MetricDef): Domain {
  return { lo: def.domain[0], hi: def.domain[1], log: Boolean(def.log) };
}

/** The legend's end labels: "0" and "8", or "≥ 8" where larger values clip to the top colour. */
export function legendEnds(def: MetricDef): { lo: string; hi: string } {
  return { lo: `${def.clipLo ? "≤ " : ""}${fmt(def.domain[0])}`, hi: `${def.clipHi ? "≥ " : ""}${fmt(def.domain[1])}` };
}

/** The legend's statement of the scale: "entropy, bits, 0–8 (≥ 8 clipped)". */
export function legendText(def: MetricDef): string {
  const [lo, hi] = def.domain;
  const clip = def.clipLo && def.clipHi ? ` (≤ ${fmt(lo)} and ≥ ${fmt(hi)} clipped)` : def.clipHi ? ` (≥ ${fmt(hi)} clipped)`
    : def.clipLo ? ` (≤ ${fmt(lo)} clipped)` : "";
  return `${def.label}, ${def.unit}, ${fmt(lo)}–${fmt(hi)}${def.log ? " log scale" : ""}${clip}`;
}

/** Position of v in the domain, in [0, 1]; NaN for a non-finite value. */
export function normalize(v: number, d: Domain): number {
  if (!Number.isFinite(v)) return NaN;
  const t = d.log ? (Math.log(Math.max(v, d.lo)) - Math.log(d.lo)) / (Math.log(d.hi) - Math.log(d.lo))
    : (v - d.lo) / (d.hi - d.lo);
  return Math.min(1, Math.max(0, t));
}

/** Heatmap colour of a value on the metric's fixed domain ("#888" for a missing value). */
export function heatColor(v: number, def: MetricDef): string {
  const t = normalize(v, metricDomain(def));
  return Number.isNaN(t) ? "#888" : css(interpolate(RAMP_HEAT, t));
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
