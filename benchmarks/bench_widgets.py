"""Measure the widgets on a 500-token prompt + 64 generated steps (SmolLM2, CPU).

    .venv/bin/python benchmarks/bench_widgets.py [--trace PATH] [--prompt-tokens 500] [--steps 64] [--compare]

Reports (and writes to artifacts/bench_widgets.json):
- bytes the dashboard sends to the browser (JSON state incl. the front-end bundle, binary buffers);
- Python-side time to encode the payload and to answer one selection (the sparse queries);
- in headless Chromium, on the standalone export (no kernel): time from navigation to the
  dashboard fully drawn, and to recolour after a metric switch;
- the static face saved beside each view (bytes, time to draw it in Python);
- with --compare: the compare view of two such runs one word apart (bytes to the browser, Python's
  compare and encode time, time to draw, local latency of a ranked-table click and a statistic switch).
The kernel round trip (click -> edges drawn, through JupyterLab) is measured by
tests/test_browser_widgets.py into artifacts/e2e_timings.json.
Nothing is asserted: these are measurements.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_trace(prompt_tokens: int, steps: int, variant: bool = False):
    """A real SmolLM2 trace of a ``prompt_tokens`` prompt; ``variant``: the same prompt with one word changed."""
    import corevital_widgets as corevital

    model, tok = corevital.load_default_model()
    text = "The colour of the sky comes from light scattering in air; short wavelengths scatter more. " * 80
    if variant:
        text = text.replace("sky", "sea", 1)
    ids = tok(text)["input_ids"][:prompt_tokens]
    return corevital.analyze(model, tok.decode(ids), tok, max_new_tokens=steps)


def compare_timings(trace_a, trace_b, page_path: Path, browser: bool) -> dict:
    """The compare view of two runs: bytes to the browser, Python's compare + encode time, and in
    Chromium (a standalone page of the view) the time to draw and the local latency of a table-row
    click (the heatmap switching statistic and outlining the cell) and of a statistic switch."""
    from corevital_widgets.analysis.compare import compare
    from corevital_widgets.widgets import CompareView, widget_to_html
    from corevital_widgets.widgets.payload import compare_payload

    out: dict = {"compare_ms": median_ms(lambda: compare(trace_a, trace_b), 5)}
    c = compare(trace_a, trace_b, ("A", "B"))
    out["compare_payload_ms"] = median_ms(lambda: compare_payload(c), 5)
    view = CompareView(c)
    out["bytes_to_browser"] = view.sync_nbytes()
    widget_to_html(view, page_path, title="corevital compare")
    out["standalone_html_bytes"] = page_path.stat().st_size
    if not browser:
        return out
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium",
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        pg = b.new_page(viewport={"width": 1400, "height": 1100})
        t0 = time.perf_counter()
        pg.goto(page_path.as_uri())
        pg.wait_for_selector(".cv-compare[data-ready='1']", timeout=60_000)
        out["navigation_to_drawn_ms"] = (time.perf_counter() - t0) * 1000
        out["row_click_local_update_ms"] = pg.evaluate("""() => new Promise(r => {
            const rows = [...document.querySelectorAll('tr.cv-cmp-row')].filter(x => x.dataset.head !== '');
            const t0 = performance.now();
            rows[Math.min(3, rows.length - 1)].click();
            requestAnimationFrame(() => r(performance.now() - t0));
        })""")
        out["stat_switch_ms"] = pg.evaluate("""() => new Promise(r => {
            const sel = document.querySelector('.cv-cmp-stat');
            const t0 = performance.now();
            sel.value = sel.options[(sel.selectedIndex + 1) % sel.options.length].value;
            sel.dispatchEvent(new Event('change', {bubbles: true}));
            requestAnimationFrame(() => r(performance.now() - t0));
        })""")
        pg.screenshot(path=str(page_path.with_suffix(".png")), full_page=False)
        b.close()
    return out


def synthetic_trace(P: int, T: int = 64, L: int = 30, H: int = 9, keys_per_row: int = 10, seed: int = 0):
    """A well-formed Trace of any size with random values (for scale tests of the views only:
    the numbers mean nothing). Each prompt row keeps token 0 (a sink), itself and random earlier keys."""
    from corevital_widgets.trace.groups import Attention, Heads, Layers, Prompt, Timeline
    from corevital_widgets.trace.sparse import SparseAttention
    from corevital_widgets.trace.trace import Trace

    rng = np.random.default_rng(seed)
    K = 10
    probs = np.sort(rng.dirichlet(np.ones(K) * 0.3, size=T), axis=1)[:, ::-1]
    ent = rng.gamma(2.0, 1.0, T).astype(np.float32)
    timeline = Timeline(entropy=ent, top_k_margin=probs[:, 0] - probs[:, 1], voter_agreement=probs.sum(1), max_prob=probs[:, 0],
                        perplexity=2.0 ** ent, surprisal=rng.gamma(2.0, 1.5, T), top_k_ids=rng.integers(0, 49152, (T, K)),
                        top_k_probs=probs, logits_has_nan=np.zeros(T, bool), logits_has_inf=np.zeros(T, bool),
                        repetition_similarity=np.full(T, np.nan))
    norms = rng.gamma(5.0, 10.0, (T, L))
    layers = Layers(l2_norm=norms, std=norms / 20, mean=rng.normal(0, 0.1, (T, L)), has_nan=np.zeros((T, L), bool), has_inf=np.zeros((T, L), bool))
    he = rng.gamma(2.0, 1.5, (T, L, H)).astype(np.float16)
    hc = rng.beta(2, 3, (T, L, H)).astype(np.float16)
    attention = Attention(entropy_mean=he.mean(-1), entropy_min=he.min(-1), entropy_max=he.max(-1), concentration_max=hc.max(-1),
                          concentration_min=hc.min(-1), collapsed_head_count=(he < 0.1).sum(-1), focused_head_count=(hc > 0.9).sum(-1),
                          score_variance_max=rng.gamma(2, 1, (T, L)), has_nan=np.zeros((T, L), bool), has_inf=np.zeros((T, L), bool))
    prompt = Prompt(surprisal=rng.gamma(2.0, 2.0, P - 1), layer_transformation=rng.beta(1, 5, (L, P)), head_entropy=rng.gamma(2, 2, (L, H)),
                    head_concentration=rng.beta(2, 2, (L, H)), sink=rng.beta(2, 2, (L, H)), basin=rng.gamma(2, 0.5, (L, H)))
    # CSR rows: per (layer, head, query q): keys {0, q} + random earlier keys, ascending, unique
    q = np.tile(np.arange(P), L * H)
    rand = (rng.random((q.size, keys_per_row - 2)) * q[:, None]).astype(np.int64)
    cand = np.concatenate([np.zeros((q.size, 1), np.int64), rand, q[:, None]], axis=1)
    cand.sort(axis=1)
    keep = np.ones_like(cand, bool)
    keep[:, 1:] = cand[:, 1:] != cand[:, :-1]
    counts = keep.sum(1)
    w = rng.random(cand.shape) * keep
    w = (w / w.sum(1, keepdims=True))[keep]
    sparse = SparseAttention(counts.reshape(L, H, P), cand[keep], w)
    meta = {"model_name": f"synthetic P={P}", "num_layers": L, "num_heads": H, "top_k": K}
    return Trace(meta=meta, prompt_ids=rng.integers(0, 49152, P), prompt_tokens=[f" w{i % 97}" for i in range(P)],
                 generated_ids=probs.argmax(1), generated_tokens=[f" g{i}" for i in range(T)], timeline=timeline, layers=layers,
                 attention=attention, heads=Heads(entropy=he, concentration=hc), prompt=prompt, sparse=sparse)


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def browser_timings(page_path: Path) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    out: dict[str, float] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1100})
        pg.goto(page_path.as_uri())
        pg.wait_for_selector(".cv-heatmap[data-cells]", timeout=60_000)
        paint = pg.evaluate("() => new Promise(r => requestAnimationFrame(() => r(performance.now())))")
        recolour = pg.evaluate("""() => new Promise(r => {
            const sel = document.querySelector('.cv-metric');
            const t0 = performance.now();
            sel.value = 'surprisal'; sel.dispatchEvent(new Event('change', {bubbles: true}));
            requestAnimationFrame(() => r(performance.now() - t0));
        })""")
        token_click = pg.evaluate("""() => new Promise(r => {
            const t0 = performance.now();
            const toks = document.querySelectorAll('.cv-graph .cv-tok');
            toks[Math.floor(toks.length / 2)].click();
            requestAnimationFrame(() => r(performance.now() - t0));
        })""")
        out["graph_scroll_redraw_ms"] = pg.evaluate("""() => new Promise(r => {
            const body = document.querySelector('.cv-graph-body');
            const t0 = performance.now();
            body.scrollTop = body.scrollHeight / 3; body.dispatchEvent(new Event('scroll'));
            requestAnimationFrame(() => requestAnimationFrame(() => r(performance.now() - t0)));
        })""")
        out["dom_nodes"] = pg.evaluate("() => document.getElementsByTagName('*').length")
        pg.screenshot(path=str(page_path.with_suffix(".png")), full_page=False)
        browser.close()
    out.update({"navigation_to_dashboard_drawn_ms": paint, "metric_switch_recolour_ms": recolour,
                "token_click_local_update_ms": token_click})
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", type=Path, help="a saved trace to measure (default: generate one)")
    ap.add_argument("--prompt-tokens", type=int, default=500)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--compare", action="store_true",
                    help="also measure the compare view of two such runs one word apart (bytes, click latency)")
    ap.add_argument("--synthetic-prompt", type=int, default=0,
                    help="measure a synthetic trace with this many prompt tokens instead (scale test, e.g. 4000)")
    args = ap.parse_args(argv)

    from corevital_widgets import load_trace
    from corevital_widgets.widgets import Dashboard, HeadHeatmap, HealthBadge, TokenTimeline, AttentionGraph, export_html
    from corevital_widgets.widgets.payload import edges_payload, trace_payload

    if args.synthetic_prompt:
        trace = synthetic_trace(args.synthetic_prompt, args.steps)
    else:
        trace = load_trace(args.trace) if args.trace else make_trace(args.prompt_tokens, args.steps)
    out: dict = {"trace": repr(trace), "P": trace.n_prompt, "T": trace.n_steps, "L": trace.n_layers, "H": trace.n_heads,
                 "sparse_entries": trace.sparse.nnz}
    dash = Dashboard(trace)
    out["bytes_to_browser"] = {"dashboard": dash.sync_nbytes()}
    for cls in (HealthBadge, TokenTimeline, HeadHeatmap, AttentionGraph):
        out["bytes_to_browser"][cls.__name__] = cls(trace).sync_nbytes()["total"]
    # the static face saved beside each view (what widget-less viewers show): bytes and time to draw
    faces = {cls.__name__: cls(trace) for cls in (Dashboard, HealthBadge, TokenTimeline, HeadHeatmap, AttentionGraph)}
    out["static_face_bytes"] = {name: {k: len(v) for k, v in w.face_bundle().items()} for name, w in faces.items()}
    out["static_face_draw_ms"] = median_ms(lambda: dash.face_svg(), 5)
    out["encode_payload_ms"] = median_ms(lambda: trace_payload(trace, "dashboard"), 5)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, trace.n_prompt, 30).tolist()
    for name, (layer, head) in {"layer_head": (3, 2), "layer_all_heads": (3, None), "all_layers_heads": (None, None)}.items():
        for incoming in (False, True):
            it = iter(tokens * 2)
            key = f"edges_query_ms_{name}" + ("_with_attended_by" if incoming else "")
            out[key] = median_ms(lambda: edges_payload(trace, next(it), layer, head, incoming), len(tokens))
    out["edges_payload_bytes_all_layers_heads"] = len(edges_payload(trace, trace.n_prompt - 1, None, None))
    (ROOT / "artifacts").mkdir(exist_ok=True)
    stem = f"bench_dashboard_synthetic_{args.synthetic_prompt}" if args.synthetic_prompt else "bench_dashboard"
    page = export_html(trace, ROOT / "artifacts" / f"{stem}.html")
    out["standalone_html_bytes"] = page.stat().st_size
    if not args.no_browser:
        out["browser"] = browser_timings(page)
    if args.compare and not args.synthetic_prompt:
        other = make_trace(args.prompt_tokens, args.steps, variant=True)
        out["compare"] = compare_timings(trace, other, ROOT / "artifacts" / "bench_compare.html", not args.no_browser)
    e2e = ROOT / "artifacts" / "e2e_timings.json"
    if e2e.exists():
        out["jupyterlab_e2e (from tests/test_browser_widgets.py)"] = json.loads(e2e.read_text())
    (ROOT / "artifacts" / f"{stem.replace('dashboard', 'widgets')}.json").write_text(json.dumps(out, indent=2))
    json.dump(out, sys.stdout, indent=2)
    print()
    return out


if __name__ == "__main__":
    main()
