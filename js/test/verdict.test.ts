import { beforeEach, describe, expect, it } from "vitest";
import { blameTarget, blameText, lightTitle, verdictInfo } from "../src/components/badge";
import { hasZ, zData, zLegend } from "../src/components/heatmap";
import { decodePayload } from "../src/payload";
import { RAMP_DIVERGE, css, zColor } from "../src/scales";
import { DEFAULT_OPTIONS } from "../src/store";
import { f4, mountView, samplePayload } from "./helpers";


const reason = (statistic: string, heads: number[], z: number, value: number, normal: number, scale: number, first_step: number | null, text: string) =>
  ({ statistic, heads, z, value, normal, scale, first_step, text });

/** A yellow verdict as `assess(trace).to_dict()` writes it: four blamed places (the badge lists three). */
const YELLOW = {
  color: "yellow",
  sentence: "Unusual for tiny at layer 1: head 2: prompt attention entropy 0.30 bits vs normal 2.10 ± 0.20 (z -9.0).",
  narrative: "Unusual for tiny at layer 1: head 2: prompt attention entropy 0.30 bits vs normal 2.10 ± 0.20 (z -9.0). " +
    "(4 places outside the normal of 200 runs at a 5% false-alarm rate.) Least certain at step 2 (' .'): 4.5 bits.",
  reasons: ["layer 1 (severity 2.3): …"],
  blame: [
    { layer: 1, severity: 2.25, text: "layer 1 (severity 2.3): head 2: prompt attention entropy 0.30 bits vs normal 2.10 ± 0.20 (z -9.0)",
      reasons: [reason("prompt_entropy", [2, 0], -9, 0.3, 2.1, 0.2, null, "head 2: prompt attention entropy 0.30 bits vs normal 2.10 ± 0.20 (z -9.0)")] },
    { layer: 0, severity: 1.5, text: "layer 0 (severity 1.5): head 1: attention entropy while generating 0.05 bits vs normal 1.00 ± 0.15 (z -6.0, from step 2)",
      reasons: [reason("step_entropy", [1], -6, 0.05, 1, 0.15, 2, "head 1: attention entropy while generating 0.05 bits vs normal 1.00 ± 0.15 (z -6.0, from step 2)")] },
    { layer: null, severity: 1.2, text: "the run (severity 1.2): mean output entropy 3.00 bits vs normal 1.00 ± 0.40 (z +4.8)",
      reasons: [reason("entropy_mean", [], 4.8, 3, 1, 0.4, null, "mean output entropy 3.00 bits vs normal 1.00 ± 0.40 (z +4.8)")] },
    { layer: 1, severity: 1.1, text: "layer 1 (severity 1.1): log hidden-state norm …", reasons: [reason("hidden_log_norm", [], 4.4, 1, 0, 0.2, null, "…")] },
  ],
  baseline: "baseline of 200 runs of tiny", alpha: 0.05, score: 9, threshold: 4,
};

const GREEN_NO_BASELINE = {
  color: "green", sentence: "No numeric fault. No baseline for tiny, so nothing is judged unusual for it (fit one: corevital.fit_baseline).",
  narrative: "No numeric fault. No baseline for tiny, so nothing is judged unusual for it (fit one: corevital.fit_baseline). Least certain at step 2.",
  reasons: [], blame: [], baseline: null, alpha: null, score: null, threshold: null,
};

/** z-scores [L=2, H=3] against a baseline (threshold 4): prompt entropy (1, 2) far below normal. */
const Z = {
  z_step_entropy: f4([2, 3], [0, 1, -2, 0.5, -6, NaN]),
  z_step_concentration: f4([2, 3], [0, 0, 0, 0, 0, 0]),
  z_prompt_entropy: f4([2, 3], [0.1, 3, -1, 2, 5, -9]),
  z_prompt_concentration: f4([2, 3], [0, 0, 0, 0, 0, 0]),
  z_prompt_sink: f4([2, 3], [0, 0, 0, 0, 0, 0]),
  z_prompt_basin: f4([2, 3], [0, 0, 12, 0, 0, 0]),
};

const mount = mountView;

beforeEach(() => { document.body.replaceChildren(); });

describe("verdict badge", () => {
  it("colours the light by the verdict, says its sentence, then the rest of the narrative", () => {
    const { el } = mount("badge", samplePayload({ verdict: YELLOW, health: { ...decodePayload(samplePayload()).meta.health, verdict: "red" } }));
    const badge = el.querySelector(".cv-badge") as HTMLElement;
    expect(badge.dataset.verdict).toBe("yellow"); // not the old health.verdict ("red")
    expect(el.querySelector(".cv-light")!.classList.contains("cv-yellow")).toBe(true);
    expect(el.querySelector(".cv-verdict")!.textContent).toBe(YELLOW.sentence);
    const narrative = el.querySelector(".cv-narrative")!.textContent!;
    expect(narrative.startsWith("(4 places outside the normal of 200 runs")).toBe(true);
    expect(narrative).not.toContain(YELLOW.sentence);
    const title = el.querySelector(".cv-light")!.getAttribute("title")!;
    expect(title).toContain("yellow: unusual for this model");
    expect(title).toContain("a healthy run of this model alarms with probability 5%");
    expect(title).toContain("baseline of 200 runs of tiny");
  });

  it("lists the top three blamed places; a click selects the layer, its first blamed head and the view that shows it", () => {
    const { el, model } = mount("badge", samplePayload({ verdict: YELLOW }));
    const entries = el.querySelectorAll(".cv-blame-entry");
    expect(entries).toHaveLength(3);
    expect(entries[0].textContent).toBe("layer 1 (severity 2.3): head 2: prompt attention entropy 0.30 bits vs normal 2.10 ± 0.20 (z -9.0)");
    expect(entries[2].querySelector(".cv-blame-jump")).toBeNull(); // the run as a whole: no layer to select
    expect(el.querySelector(".cv-blame")!.textContent).toContain("+1 more");
    (el.querySelector(".cv-blame-jump[data-layer='1']") as HTMLElement).click();
    expect(model.get("selection")).toMatchObject({ layer: 1, head: 2, step: 0 });
    expect(model.get("options")).toMatchObject({ heat_source: "prompt", heat_value: "entropy" });
    (el.querySelector(".cv-blame-jump[data-layer='0']") as HTMLElement).click();
    expect(model.get("selection")).toMatchObject({ layer: 0, head: 1, step: 2 }); // where it first went past the line
    expect(model.get("options")).toMatchObject({ heat_source: "step", heat_value: "entropy" });
    expect(model.saves).toBeGreaterThan(0);
  });

  it("keeps the health flags as facts, with their jumps", () => {
    const { el, model } = mount("badge", samplePayload({ verdict: YELLOW }));
    const facts = el.querySelector(".cv-facts")!;
    expect(facts.querySelector(".cv-facts-title")!.textContent).toBe("facts");
    expect(facts.querySelectorAll(".cv-flag.cv-fired")).toHaveLength(2);
    (facts.querySelector(".cv-flag-jump[data-layer='1']") as HTMLElement).click();
    expect(model.get("selection")).toMatchObject({ step: 0, layer: 1, head: null });
  });

  it("says when there is no baseline for the model", () => {
    const { el } = mount("badge", samplePayload({ verdict: GREEN_NO_BASELINE }));
    expect(el.querySelector(".cv-badge")!.getAttribute("data-verdict")).toBe("green");
    expect(el.querySelector(".cv-verdict")!.textContent).toContain("No baseline for tiny");
    expect(el.querySelector(".cv-light")!.getAttribute("title")).toContain("no baseline for this model");
    expect(el.querySelector(".cv-blame")).toBeNull();
    expect(el.querySelector(".cv-narrative")!.textContent).toBe("Least certain at step 2.");
  });

  it("still shows an old payload without a verdict by its health rules", () => {
    const { el } = mount("badge", samplePayload());
    const badge = el.querySelector(".cv-badge") as HTMLElement;
    expect(badge.dataset.verdict).toBe("yellow");
    expect(badge.dataset.assessed).toBe("false");
    expect(el.querySelector(".cv-verdict")!.textContent).toBe("warnings");
    expect(el.querySelector(".cv-narrative")).toBeNull();
    expect(el.querySelectorAll(".cv-facts .cv-flag.cv-fired")).toHaveLength(2);
  });

  it("reads the verdict and blame purely", () => {
    const v = verdictInfo({ verdict: YELLOW });
    expect(v.assessed && v.alpha === 0.05 && v.blame.length === 4).toBe(true);
    expect(lightTitle(v)).toContain("probability 5%");
    // Python's own words win when the payload carries them
    const said = "Judged against the baseline of 9 runs: a healthy run of this model is called unusual with probability 1%.";
    expect(lightTitle(verdictInfo({ verdict: { ...YELLOW, calibration: said } }))).toContain(said);
    expect(verdictInfo({ health: { verdict: "red" } })).toMatchObject({ color: "red", sentence: "problems", assessed: false });
    expect(blameTarget(YELLOW.blame[2] as any)).toBeNull();
    expect(blameTarget(YELLOW.blame[3] as any)).toEqual({ layer: 1, head: null, step: null, source: null, value: null });
    expect(blameText({ ...YELLOW.blame[0], text: "" } as any)).toBe(YELLOW.blame[0].text);
  });
});

describe("heatmap vs normal", () => {
  it("picks the z-scores of the shown pass and value, on a diverging scale clipped at twice the threshold", () => {
    const p = decodePayload(samplePayload({ z_threshold: 4 }, Z));
    expect(hasZ(p)).toBe(true);
    expect(hasZ(decodePayload(samplePayload()))).toBe(false);
    const zp = zData(p, { ...DEFAULT_OPTIONS, heat_source: "prompt", heat_color: "z" })!;
    expect(zp.z[5]).toBe(-9);
    expect(zp.limit).toBe(8);
    expect(zLegend(zp)).toBe("z vs this model's normal (|z| > 4 unusual)");
    expect(zData(p, { ...DEFAULT_OPTIONS, heat_color: "z" })!.z[4]).toBe(-6);
    expect(zColor(-100, 8)).toBe(css(RAMP_DIVERGE[0]));
    expect(zColor(0, 8)).toBe(css(RAMP_DIVERGE[2]));
    expect(zColor(8, 8)).toBe(css(RAMP_DIVERGE[4]));
    expect(zColor(NaN, 8)).toBe("#888");
  });

  it("draws the vs-normal mode with its legend and outlines, and switches back", () => {
    const { el, model } = mount("heatmap", samplePayload({ z_threshold: 4 }, Z));
    const root = el.querySelector(".cv-heatmap") as HTMLElement;
    const color = root.querySelector(".cv-heat-color") as HTMLSelectElement;
    expect((color.options[1] as HTMLOptionElement).disabled).toBe(false);
    expect(root.dataset.colorMode).toBe("value");
    color.value = "z";
    color.dispatchEvent(new Event("change"));
    expect(model.get("options").heat_color).toBe("z");
    expect(root.dataset.colorMode).toBe("z");
    expect(root.dataset.cells).toBe("6");
    expect(root.dataset.unusual).toBe("1"); // step entropy: (1, 1) at -6
    expect(root.querySelector(".cv-heat-z-legend")!.textContent).toContain("z vs this model's normal (|z| > 4 unusual)");
    expect(root.querySelector(".cv-heat-info")!.textContent).toBe("all steps");
    model.set("options", { ...model.get("options"), heat_source: "prompt" });
    expect(root.dataset.unusual).toBe("2"); // prompt entropy: 5 and -9
    // the prompt pass also has the sink and basin against normal (a blamed basin can be seen)
    expect(Array.from((root.querySelector(".cv-heat-value") as HTMLSelectElement).options).map((o) => o.value))
      .toEqual(["entropy", "concentration", "sink", "basin"]);
    model.set("options", { ...model.get("options"), heat_value: "basin" });
    expect(root.dataset.value).toBe("basin");
    expect(root.dataset.unusual).toBe("1"); // basin: (0, 2) at +12
    // the legend is one compact line; which statistic (log basin) is in its tooltip
    expect(root.querySelector<HTMLElement>(".cv-heat-z-legend")!.title).toContain("log basin");
    model.set("options", { ...model.get("options"), heat_source: "step" }); // steps: entropy and concentration only
    expect(Array.from((root.querySelector(".cv-heat-value") as HTMLSelectElement).options).map((o) => o.value)).toEqual(["entropy", "concentration"]);
    expect(root.dataset.value).toBe("entropy");
    model.set("options", { ...model.get("options"), heat_color: "value" });
    expect(root.dataset.colorMode).toBe("value");
    expect(root.querySelector(".cv-heat-z-legend")).toBeNull();
  });

  it("offers no vs-normal colouring without a baseline", () => {
    const { el } = mount("heatmap", samplePayload(), { options: { ...DEFAULT_OPTIONS, heat_color: "z" } });
    const root = el.querySelector(".cv-heatmap") as HTMLElement;
    const z = (root.querySelector(".cv-heat-color") as HTMLSelectElement).options[1] as HTMLOptionElement;
    expect(z.disabled).toBe(true);
    expect(z.title).toBe("no baseline for this model");
    expect(root.dataset.colorMode).toBe("value");
    expect(root.dataset.cells).toBe("6");
    expect(root.querySelector(".cv-heat-z-legend")).toBeNull();
  });
});
