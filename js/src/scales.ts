/** Colour scales, metric definitions and number formatting: pure functions, no DOM. */

export type RGB = [number, number, number];

/** The ramps and domains live in one file, shared with the static face drawn in Python
 * (src/corevital_widgets/data/scales.json): the same colour means the same number in both. */
import SCALES from "../../src/corevital_widgets/data/scales.json";

/** From calm to alarming (pale blue -> yellow -> orange -> red): "worse" is warmer. */
export const RAMP_ALARM = SCALES.ramps.alarm as RGB[];
/** Perceptually ordered dark-blue -> green -> yellow (viridis-like) for the heatmap. */
export const RAMP_HEAT = SCALES.ramps.heat as RGB[];
/** Diverging blue (below normal) -> near-white (normal) -> red (above normal), for z-scores. */
export const RAMP_DIVERGE = SCALES.ramps.diverge as RGB[];

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
export const METRICS = SCALES.metrics as MetricDef[];

/** The heatmap's values (heads and the logit lens), with their fixed domains. */
export const HEAT_METRICS = SCALES.heat as Record<"entropy" | "concentration" | "sink" | "basin" | "lens_entropy", MetricDef>;

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

/** The compare view's difference scale of one per-head statistic: b − a on the diverging ramp,
 * symmetric at ±limit, fixed per statistic in its unit (scales.json "diff"; the reason in `basis`). */
export interface DiffScale { key: string; label: string; unit: string; limit: number; basis: string }

/*
 * The fixed limits of the differences (b − a), chosen from what each statistic can move, not from any pair:
 * - attention entropy (step, prompt): ±3 bits = one head spreads over 2^3 = 8× as many keys as the other.
 * - concentration, sink: weights in 0..1, so a difference lies in −1..1; ±0.5 = half that range.
 * - log basin (natural log of the middle-third ratio): ±3 = a ratio e^3 ≈ 20× the other's.
 * Larger differences clip to the end colours (the legend says so).
 */
export const DIFF_SCALES = SCALES.diff as Record<string, DiffScale>;

/** The difference scale of a per-head statistic (a ±1 scale for one scales.json does not list). */
export function diffScale(stat: string): DiffScale {
  return DIFF_SCALES[stat] ?? { key: stat, label: stat, unit: "", limit: 1, basis: "no fixed scale for this statistic: ±1 in its unit" };
}
