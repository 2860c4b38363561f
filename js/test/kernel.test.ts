/** Kernel-less honesty: a view restored without its kernel says so within a second and serves what
 * it holds; the live view hides its static face. */
import { afterEach, describe, expect, it, vi } from "vitest";
import { hideFace } from "../src/render";
import { KERNEL_PING_MS, Store } from "../src/store";
import { edgesPayload, fakeModel } from "./helpers";

afterEach(() => { vi.useRealTimers(); document.head.innerHTML = ""; document.body.innerHTML = ""; });

describe("kernel state", () => {
  it("asks the kernel once and becomes live on its pong", () => {
    vi.useFakeTimers();
    const m = fakeModel({});
    const s = new Store(m);
    expect(m.sent).toEqual([{ type: "ping" }]);
    expect(s.kernel).toBe("unknown");
    m.emit("msg:custom", { type: "pong" });
    expect(s.kernel).toBe("live");
    vi.advanceTimersByTime(KERNEL_PING_MS + 10);
    expect(s.kernel).toBe("live");
    expect(s.waitingText(null, null)).toBe("waiting for the kernel…");
  });

  it("says no kernel answers, and what it holds, when the ping goes unanswered", () => {
    vi.useFakeTimers();
    const m = fakeModel({ edges: edgesPayload(5, 3, null, [0, 4], [0.6, 0.3]) });
    const s = new Store(m);
    let changed = 0;
    s.onKernel(() => changed++);
    vi.advanceTimersByTime(KERNEL_PING_MS - 1);
    expect(s.kernel).toBe("unknown");
    vi.advanceTimersByTime(2);
    expect(s.kernel).toBe("silent");
    expect(changed).toBe(1);
    // the saved answer is still served; other queries say why not instead of waiting
    expect(s.edgesFor(5, 3, null)?.meta.token).toBe(5);
    expect(s.edgesFor(6, 3, null)).toBeNull();
    expect(s.waitingText(3, null)).toMatch(/no kernel answers this view.*holds the edges of token 5/);
    expect(s.waitingText(4, null)).toMatch(/holds no edges for this layer\/head/);
  });

  it("a send that throws (no comm) is known kernel-less at once; a static page says it is static", () => {
    const m = fakeModel({});
    (m as any).send = () => { throw new Error("no comm"); };
    expect(new Store(m).kernel).toBe("silent");
    const st = new Store(fakeModel({ _static: true }));
    expect(st.kernel).toBe("static");
    expect(st.waitingText(null, null)).toMatch(/static page/);
  });

  it("an answer from the kernel after silence makes it live again, and earlier answers stay held", () => {
    vi.useFakeTimers();
    const m = fakeModel({ edges: edgesPayload(1, null, null, [0], [0.9]) });
    const s = new Store(m);
    s.on(["edges"], () => {});
    vi.advanceTimersByTime(KERNEL_PING_MS + 1);
    expect(s.kernel).toBe("silent");
    void s.edges;
    m.set("edges", edgesPayload(2, null, null, [1], [0.7]));
    expect(s.kernel).toBe("live");
    expect(s.edgesFor(1, null, null)?.meta.token).toBe(1);
    expect(s.heldTokens(null, null)).toEqual([1, 2]);
  });
});

describe("static face", () => {
  it("hideFace adds one rule hiding the face and its output box", () => {
    const out = document.createElement("div");
    out.className = "jp-OutputArea-child";
    out.innerHTML = '<div class="cv-face cv-face-0123456789abcdef">picture</div>';
    document.body.append(out);
    hideFace("0123456789abcdef", document);
    hideFace("0123456789abcdef", document);
    const rules = document.head.querySelectorAll("style#cv-face-hide-0123456789abcdef");
    expect(rules.length).toBe(1);
    expect(rules[0].textContent).toContain(".jp-OutputArea-child:has(.cv-face-0123456789abcdef)");
    hideFace("not a face id; {}", document); // never injects CSS from an odd id
    expect(document.head.querySelectorAll("style").length).toBe(1);
  });
});

describe("the attention graph without its kernel", () => {
  it("serves the held edges and says why for others, without waiting", async () => {
    vi.useFakeTimers();
    const { samplePayload, mountView, unmountAll } = await import("./helpers");
    const edges = edgesPayload(3, null, null, [0, 1], [0.7, 0.2]);
    const { el, model } = mountView("graph", samplePayload(), {
      edges: new DataView(edges.buffer, edges.byteOffset, edges.byteLength),
      selection: { step: 0, token: 3, layer: null, head: null, metric: "entropy" },
    });
    const root = el.querySelector(".cv-graph") as HTMLElement;
    expect(root.dataset.state).toBe("drawn");
    vi.advanceTimersByTime(KERNEL_PING_MS + 1);
    (el.querySelector(".cv-tok[data-token='1']") as HTMLElement).click();
    expect(model.state.selection.token).toBe(1);
    expect(root.dataset.state).toBe("no_kernel");
    expect(el.querySelector(".cv-graph-info")!.textContent).toMatch(/no kernel answers this view.*holds the edges of token 3/);
    (el.querySelector(".cv-tok[data-token='3']") as HTMLElement).click();
    expect(root.dataset.state).toBe("drawn");
    unmountAll();
  });
});
