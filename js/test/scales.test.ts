import { describe, expect, it } from "vitest";
import {
  badness, fmt, HEAT_METRICS, heatColor, interpolate, legendEnds, legendText, METRICS, metricDef, metricDomain, normalize, RAMP_ALARM, showToken,
  tokenColor,
} from "../src/scales";

describe("colour scales", () => {
  it("interpolates between stops and clamps", () => {
    expect(interpolate(RAMP_ALARM, 0)).toEqual(RAMP_ALARM[0]);
    expect(interpolate(RAMP_ALARM, 1)).toEqual(RAMP_ALARM[RAMP_ALARM.length - 1]);
    expect(interpolate(RAMP_ALARM, 2)).toEqual(RAMP_ALARM[RAMP_ALARM.length - 1]);
    const mid = interpolate([[0, 0, 0], [100, 200, 50]], 0.5);
    expect(mid).toEqual([50, 100, 25]);
  });

  // The domains used to be derived from each trace (entropy 0..max of the trace): a 0.14-bit entropy
  // was alarm red on a confident run. Now every metric has one fixed domain in its unit.
  it("gives every metric a fixed domain in its unit, whatever the data", () => {
    expect(metricDomain(metricDef("max_prob"))).toEqual({ lo: 0, hi: 1, log: false });
    expect(metricDomain(metricDef("entropy"))).toEqual({ lo: 0, hi: 8, log: false });
    expect(metricDomain(metricDef("surprisal"))).toEqual({ lo: 0, hi: 16, log: false });
    for (const k of ["top_k_margin", "voter_agreement", "max_prob"]) expect(metricDef(k).domain).toEqual([0, 1]);
    const d = metricDomain(metricDef("perplexity"));
    expect(d).toEqual({ lo: 1, hi: 256, log: true });
    expect(normalize(16, d)).toBeCloseTo(0.5, 6); // log scale: 2^4 is half way to 2^8
    // perplexity = 2^entropy paints exactly like entropy
    expect(normalize(2 ** 3, d)).toBeCloseTo(normalize(3, metricDomain(metricDef("entropy"))), 6);
    expect(HEAT_METRICS.entropy.domain).toEqual([0, 10]);
    expect(HEAT_METRICS.concentration.domain).toEqual([0, 1]);
    expect(HEAT_METRICS.sink.domain).toEqual([0, 1]);
    expect([HEAT_METRICS.basin.domain, HEAT_METRICS.basin.log]).toEqual([[0.01, 100], true]);
    expect(normalize(1, metricDomain(HEAT_METRICS.basin))).toBeCloseTo(0.5, 6); // equal mass in the middle of the scale
    expect(HEAT_METRICS.lens_entropy.domain).toEqual([0, 16]);
    for (const m of [...METRICS, ...Object.values(HEAT_METRICS)]) expect(m.basis.length).toBeGreaterThan(0);
  });

  it("orders badness by the metric's direction and clips beyond the cap", () => {
    const ent = metricDef("entropy"), margin = metricDef("top_k_margin");
    const de = metricDomain(ent), dm = metricDomain(margin);
    expect(badness(4, ent, de)).toBe(0.5); // the 4-bit high-entropy line is the middle of the ramp
    expect(badness(8, ent, de)).toBe(1);
    expect(badness(12, ent, de)).toBe(1); // above the cap: the top colour
    expect(tokenColor(12, ent, de)).toBe(tokenColor(8, ent, de));
    expect(badness(0.14, ent, de)).toBeLessThan(0.02); // a confident token stays calm
    expect(badness(0.9, margin, dm)).toBeCloseTo(0.1, 6);
    expect(tokenColor(NaN, ent, de)).toBe("transparent");
    expect(tokenColor(4, ent, de)).not.toEqual(tokenColor(0, ent, de));
    expect(heatColor(NaN, HEAT_METRICS.entropy)).toBe("#888");
    expect(heatColor(25, HEAT_METRICS.entropy)).toBe(heatColor(10, HEAT_METRICS.entropy));
    expect(heatColor(1e-6, HEAT_METRICS.basin)).toBe(heatColor(0.01, HEAT_METRICS.basin));
  });

  it("states domain, unit and clipping in the legend", () => {
    expect(legendText(metricDef("entropy"))).toBe("entropy, bits, 0–8 (≥ 8 clipped)");
    expect(legendEnds(metricDef("entropy"))).toEqual({ lo: "0", hi: "≥ 8" });
    expect(legendText(metricDef("surprisal"))).toBe("surprisal, bits, 0–16 (≥ 16 clipped)");
    expect(legendText(metricDef("max_prob"))).toBe("max probability, probability, 0–1");
    expect(legendEnds(metricDef("max_prob"))).toEqual({ lo: "0", hi: "1" });
    expect(legendText(metricDef("perplexity"))).toBe("perplexity, choices (2^bits), 1–256 log scale (≥ 256 clipped)");
    expect(legendText(HEAT_METRICS.entropy)).toBe("attention entropy, bits, 0–10 (≥ 10 clipped)");
    expect(legendText(HEAT_METRICS.basin)).toBe("basin (middle ÷ other keys), ratio, 0.01–100 log scale (≤ 0.01 and ≥ 100 clipped)");
    expect(legendEnds(HEAT_METRICS.basin)).toEqual({ lo: "≤ 0.01", hi: "≥ 100" });
    expect(legendText(HEAT_METRICS.lens_entropy)).toBe("lens entropy, bits, 0–16 (≥ 16 clipped)");
  });

  it("formats numbers and tokens", () => {
    expect(fmt(3.14159)).toBe("3.14");
    expect(fmt(NaN)).toBe("–");
    expect(fmt(Infinity)).toBe("∞");
    expect(fmt(1e-5)).toBe("1.00e-5");
    expect(showToken("a\nb")).toBe("a↵\nb");
    expect(showToken("")).toBe("∅");
  });
});
