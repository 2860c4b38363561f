import { describe, expect, it } from "vitest";
import { badness, fmt, interpolate, metricDef, metricDomain, normalize, RAMP_ALARM, showToken, tokenColor } from "../src/scales";

describe("colour scales", () => {
  it("interpolates between stops and clamps", () => {
    expect(interpolate(RAMP_ALARM, 0)).toEqual(RAMP_ALARM[0]);
    expect(interpolate(RAMP_ALARM, 1)).toEqual(RAMP_ALARM[RAMP_ALARM.length - 1]);
    expect(interpolate(RAMP_ALARM, 2)).toEqual(RAMP_ALARM[RAMP_ALARM.length - 1]);
    const mid = interpolate([[0, 0, 0], [100, 200, 50]], 0.5);
    expect(mid).toEqual([50, 100, 25]);
  });

  it("derives domains: fixed for probabilities, data-driven from 0 for bits, log for perplexity", () => {
    expect(metricDomain(metricDef("max_prob"), [0.2, 0.3])).toEqual({ lo: 0, hi: 1, log: false });
    expect(metricDomain(metricDef("entropy"), [1, 3, NaN], [5])).toEqual({ lo: 0, hi: 5, log: false });
    const d = metricDomain(metricDef("perplexity"), [1, 16]);
    expect(d.log).toBe(true);
    expect(normalize(4, d)).toBeCloseTo(0.5, 6);
  });

  it("orders badness by the metric's direction", () => {
    const ent = metricDef("entropy"), margin = metricDef("top_k_margin");
    const de = metricDomain(ent, [0, 4]), dm = metricDomain(margin, []);
    expect(badness(4, ent, de)).toBe(1);
    expect(badness(0.9, margin, dm)).toBeCloseTo(0.1, 6);
    expect(tokenColor(NaN, ent, de)).toBe("transparent");
    expect(tokenColor(4, ent, de)).not.toEqual(tokenColor(0, ent, de));
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
