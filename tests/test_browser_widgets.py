"""End to end: a real JupyterLab server, headless Chromium, a notebook calling ``show()`` on SmolLM2.

The kernel saves its trace and logs every selection it receives to files in the notebook's
folder, so the test can check what Python saw and that the edges the browser drew are exactly
``trace.attends_to`` for the clicked token/layer/head. Screenshots and timings go to artifacts/.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from corevital_widgets.analysis.risk import trace_risk

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
MAX_NEW_TOKENS = 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook_of(*sources: str) -> dict:
    """A notebook of code cells with these sources, its kernel the project's venv ("python3")."""
    return {
        "cells": [{"cell_type": "code", "metadata": {}, "source": src, "outputs": [], "execution_count": None} for src in sources],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (corevital)", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


def _show_saved_trace(trace_path: Path, log: Path) -> str:
    """A cell showing a saved trace whose every selection the kernel appends to ``log`` (JSON lines)."""
    return (
        "import json\nfrom corevital_widgets import load_trace\nfrom corevital_widgets.widgets import show\n"
        f"dash = show(load_trace({str(trace_path)!r}))\n"
        f"dash.on_select(lambda sel: open({str(log)!r}, 'a').write(json.dumps(sel) + '\\n'))\n"
        "dash"
    )


def _notebook(work: Path) -> dict:
    setup = (
        "import json\n"
        "import corevital_widgets as corevital\n"
        "from corevital_widgets.widgets import show\n"
        "model, tok = corevital.load_default_model()\n"
        "prompt = tok.apply_chat_template([{'role': 'user', 'content': 'Why is the sky blue? Answer briefly.'}],\n"
        "                                 tokenize=False, add_generation_prompt=True)\n"
        "print('model ready')"
    )
    run = (
        f"dash = show(model, prompt, tok, max_new_tokens={MAX_NEW_TOKENS})\n"
        f"dash.trace.save({str(work / 'kernel.cvtrace')!r})\n"
        f"dash.on_select(lambda sel: open({str(work / 'selections.jsonl')!r}, 'a').write(json.dumps(sel) + '\\n'))\n"
        "dash"
    )
    big = (
        "text = 'The colour of the sky comes from light scattering in air; short wavelengths scatter more. ' * 80\n"
        "big_dash = show(model, tok.decode(tok(text)['input_ids'][:500]), tok, max_new_tokens=64)  # live: the prompt pass shows\n"
        "big = big_dash.trace\n"
        f"open({str(work / 'big_bytes.json')!r}, 'w').write(json.dumps({{**big_dash.sync_nbytes(), 'P': big.n_prompt, 'T': big.n_steps}}))\n"
        f"big_dash.on_select(lambda sel: open({str(work / 'big_selections.jsonl')!r}, 'a').write(json.dumps(sel) + '\\n'))\n"
        "big_dash"
    )
    return _notebook_of(setup, run, big)


def _kernel_spec(data: Path) -> None:
    """Kernel "python3" = this interpreter (the project's venv)."""
    kdir = data / "kernels" / "python3"
    kdir.mkdir(parents=True)
    (kdir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (corevital)", "language": "python",
    }))


def _start_server(work: Path, app: str):
    """Start ``jupyter lab`` or ``jupyter notebook`` (7) on localhost with a fixed token; yields its info."""
    data = work / "jupyter-data"
    _kernel_spec(data)
    # no "Jupyter news?" toast over the screenshots
    settings = work / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    # the dark theme: the views must read their colours from JupyterLab's --jp-* variables
    (settings / "themes.jupyterlab-settings").write_text(json.dumps({"theme": "JupyterLab Dark"}))
    token = secrets.token_hex(16)
    port = _free_port()
    env = dict(os.environ)
    env.update({
        "JUPYTER_PATH": os.pathsep.join([str(data), env.get("JUPYTER_PATH", "")]).rstrip(os.pathsep), "JUPYTER_CONFIG_DIR": str(work / "config"),
        "JUPYTER_RUNTIME_DIR": str(work / "runtime"), "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"),
        "JUPYTERLAB_SETTINGS_DIR": str(work / "user-settings"),
        "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    })
    log = open(work / "server.log", "w")
    extra = ["--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"] if app == "lab" else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab" if app == "lab" else "notebook", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", "--ServerApp.open_browser=False", "--allow-root", *extra],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"jupyter {app} did not start:\n{(work / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    try:
        yield {"base": base, "token": token, "work": work}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab 4 server on localhost with a fixed token, its kernel the project's venv python."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (make browser-deps)")
    work = tmp_path_factory.mktemp("lab")
    (work / "e2e.ipynb").write_text(json.dumps(_notebook(work)))
    yield from _start_server(work, "lab")


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium (Debian's, never a downloaded one) for the module."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (make browser-deps)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open_notebook(lab, browser, name: str, workspace: str):
    """A new page with ``name`` open in a fresh JupyterLab workspace, its kernel started; (page, errors)."""
    pg = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(f"{lab['base']}/lab/workspaces/{workspace}/tree/{name}?reset&token={lab['token']}")
    pg.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    try:  # the kernel-choice dialog, when JupyterLab asks
        pg.locator(".jp-Dialog .jp-mod-accept").click(timeout=5_000)
    except Exception:
        pass
    pg.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle'], .jp-Toolbar-kernelStatus", timeout=60_000)
    return pg, errors


@pytest.fixture(scope="module")
def page(lab, browser):
    pg, errors = _open_notebook(lab, browser, "e2e.ipynb", "cv-e2e")
    yield pg, errors
    pg.close()


def _run_cell(pg, index: int) -> float:
    editor = pg.locator(".jp-Cell .jp-InputArea-editor").nth(index)
    editor.click()
    t0 = time.perf_counter()
    pg.keyboard.press("Shift+Enter")
    return t0


def _wait_idle_cell(pg, index: int, timeout_s: float) -> None:
    prompt = pg.locator(".jp-Cell .jp-InputArea-prompt").nth(index)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = prompt.inner_text().strip()
        if text.startswith("[") and text not in ("[*]:", "[ ]:"):
            return
        time.sleep(0.25)
    raise AssertionError(f"cell {index} did not finish in {timeout_s}s")


def _luminance(css_rgb: str) -> float:
    r, g, b = (float(x) for x in css_rgb[css_rgb.index("(") + 1:css_rgb.index(")")].split(",")[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def _selections(work: Path) -> list[dict]:
    f = work / "selections.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []


def _wait_for(cond, timeout_s: float = 10, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_dashboard_in_jupyterlab(lab, page):
    from corevital_widgets import load_trace

    pg, errors = page
    timings: dict[str, float] = {}

    _run_cell(pg, 0)
    _wait_idle_cell(pg, 0, 180)
    pg.wait_for_selector("text=model ready", timeout=10_000)

    t0 = _run_cell(pg, 1)
    pg.wait_for_selector(".cv-dashboard", timeout=120_000)
    timings["cell_to_first_paint_s"] = time.perf_counter() - t0  # the live view, before generation ends
    pg.wait_for_selector(".cv-dashboard .cv-timeline .cv-live", timeout=120_000)  # tokens arrive while generating
    timings["cell_to_first_live_token_s"] = time.perf_counter() - t0
    try:
        pg.wait_for_selector(".cv-heatmap[data-cells]", timeout=180_000)
    except Exception as e:
        pg.screenshot(path=str(ARTIFACTS / "e2e_failed.png"), full_page=True)
        raise AssertionError(f"the dashboard never got its trace; cell output:\n{pg.locator('.jp-Cell').nth(1).inner_text()[-3000:]}") from e
    timings["cell_to_full_dashboard_s"] = time.perf_counter() - t0
    _wait_idle_cell(pg, 1, 60)
    assert pg.locator(".cv-dashboard").count() == 1, "show() must display the dashboard exactly once"

    trace = load_trace(lab["work"] / "kernel.cvtrace")
    P, T, L, H = trace.n_prompt, trace.n_steps, trace.n_layers, trace.n_heads
    dash = pg.locator(".cv-dashboard")

    # the four components, with the right counts
    assert dash.locator(".cv-timeline .cv-tok").count() == P + T
    assert dash.locator(".cv-timeline .cv-gen").count() == T
    heat = dash.locator(".cv-heatmap")
    assert heat.get_attribute("data-cells") == str(L * H)
    assert (heat.get_attribute("data-rows"), heat.get_attribute("data-cols")) == (str(L), str(H))
    badge = dash.locator(".cv-badge")
    verdict = trace.verdict()  # the light is the verdict against the model's normal, not the old absolute rules
    assert badge.get_attribute("data-verdict") == verdict.color
    assert badge.locator(".cv-verdict").inner_text().strip() == verdict.sentence
    assert badge.locator(".cv-flag.cv-fired").count() == len(trace.health.fired)
    assert dash.locator(".cv-graph .cv-tok").count() == P
    pg.screenshot(path=str(ARTIFACTS / "e2e_dashboard.png"), full_page=True)
    # themed: the text colour follows JupyterLab's dark theme
    fg = dash.locator(".cv-timeline .cv-prompt").first.evaluate("e => getComputedStyle(e).color")
    assert _luminance(fg) > 0.5, f"prompt text {fg} is not light on the dark theme"

    # click a prompt token: Python sees it and the drawn edges are trace.attends_to(token, layer, head)
    graph = dash.locator(".cv-graph")
    graph.locator(".cv-threshold").evaluate("e => { e.value = '0'; e.dispatchEvent(new Event('input', {bubbles: true})); }")
    token, layer, head = min(7, P - 1), min(3, L - 1), min(2, H - 1)
    graph.locator(".cv-graph-layer").select_option(str(layer))
    graph.locator(".cv-graph-head").select_option(str(head))
    t_click = time.perf_counter()
    graph.locator(f".cv-tok[data-token='{token}']").click()
    _wait_for(lambda: graph.get_attribute("data-state") == "drawn" and graph.get_attribute("data-token") == str(token),
              10, "edges for the clicked token")
    timings["click_to_edges_wall_ms"] = (time.perf_counter() - t_click) * 1000
    rt = graph.get_attribute("data-roundtrip-ms")
    if rt:
        timings["click_to_edges_in_browser_ms"] = float(rt)
    seen = _wait_for(lambda: [s for s in _selections(lab["work"]) if s["token"] == token and s["layer"] == layer and s["head"] == head],
                     10, "the kernel's on_select callback")
    assert seen[-1]["token"] == token
    drawn = json.loads(graph.get_attribute("data-edges"))
    keys, weights = trace.attends_to(token, layer, head)
    assert [k for k, _ in drawn] == keys.tolist()
    np.testing.assert_allclose([w for _, w in drawn], weights, rtol=1e-5, atol=1e-6)
    assert graph.locator(".cv-key").count() == int(np.sum(keys != token))

    # toggled: the tokens attending to it, computed in the kernel only when shown
    graph.locator(".cv-incoming").check()
    _wait_for(lambda: graph.get_attribute("data-in-edges") not in (None, "[]"), 10, "incoming edges")
    drawn_in = json.loads(graph.get_attribute("data-in-edges"))
    assert [q for q, _ in drawn_in] == trace.attended_by(token, layer, head)[0].tolist()
    graph.locator(".cv-incoming").uncheck()

    # aggregated over heads (head = None) is the mean the trace computes
    graph.locator(".cv-graph-head").select_option("")
    _wait_for(lambda: graph.get_attribute("data-state") == "drawn" and graph.get_attribute("data-head") == "", 10, "aggregated edges")
    drawn = json.loads(graph.get_attribute("data-edges"))
    assert [k for k, _ in drawn] == trace.attends_to(token, layer, None)[0].tolist()
    pg.screenshot(path=str(ARTIFACTS / "e2e_edges.png"), full_page=True)

    # hover: the top-k alternatives with their probabilities
    step = min(2, T - 1)
    dash.locator(".cv-timeline .cv-gen").nth(step).hover()
    tip = dash.locator(".cv-timeline .cv-tip")
    tip.wait_for(state="visible", timeout=5_000)
    assert tip.locator(".cv-alt").count() == trace.timeline.top_k_ids.shape[1]
    shown = float(tip.locator(".cv-alt-p").first.inner_text())
    assert abs(shown - float(trace.timeline.top_k_probs[step].max())) < 5e-3
    assert json.loads(tip.locator(".cv-alt-text").first.inner_text()) == trace.top_k_tokens[step][int(trace.timeline.top_k_probs[step].argmax())]
    pg.mouse.move(0, 0)

    # switching the metric recolours the tokens
    gen = dash.locator(".cv-timeline .cv-gen")
    colours = lambda: gen.evaluate_all("els => els.map(e => e.style.background)")  # noqa: E731
    before = colours()
    dash.locator(".cv-metric").select_option("max_prob")
    _wait_for(lambda: colours() != before, 5, "new colours")
    assert dash.locator(".cv-timeline").get_attribute("data-metric") == "max_prob"
    _wait_for(lambda: any(s["metric"] == "max_prob" for s in _selections(lab["work"])), 10, "metric reaching Python")

    # clicking a fired flag selects where it fired
    if trace.health.fired:
        name = trace.health.fired[0]
        at = trace.health.first_fired[name]
        badge.locator(f".cv-flag[data-flag='{name}'] .cv-flag-jump").click()
        _wait_for(lambda: any(s["step"] == at.step and (at.layer is None or s["layer"] == at.layer) for s in _selections(lab["work"])),
                  10, "flag jump reaching Python")

    # arrow keys move the step
    dash.locator(".cv-timeline .cv-gen").nth(0).click()
    dash.locator(".cv-timeline").press("ArrowRight")
    _wait_for(lambda: dash.locator(".cv-timeline").get_attribute("data-step") == "1", 5, "arrow key")
    pg.screenshot(path=str(ARTIFACTS / "e2e_final.png"), full_page=True)

    _measure_large_prompt(pg, lab["work"], timings)
    (ARTIFACTS / "e2e_timings.json").write_text(json.dumps(timings, indent=2))
    print("e2e timings:", timings)
    assert not errors, errors


def _measure_large_prompt(pg, work: Path, timings: dict) -> None:
    """A 500-token prompt + 64 steps: bytes sent, time to paint, click -> edges round trips (measured);
    while the prompt pass runs, the bar names it with the blocks done (not "generating 0/64")."""
    pg.evaluate("""() => { window.__cvProgress = []; new MutationObserver(() => {
        const d = document.querySelectorAll('.cv-dashboard'); const e = d.length > 1 ? d[1].querySelector('.cv-progress-text') : null;
        const t = e ? e.textContent : ''; if (t && window.__cvProgress[window.__cvProgress.length - 1] !== t) window.__cvProgress.push(t);
        }).observe(document.body, { subtree: true, childList: true, characterData: true }); }""")
    t0 = _run_cell(pg, 2)
    big = pg.locator(".cv-dashboard").nth(1)
    big.locator(".cv-heatmap[data-cells]").wait_for(timeout=180_000)
    timings["large_cell_to_dashboard_s (includes generating 64 tokens)"] = time.perf_counter() - t0
    _wait_idle_cell(pg, 2, 60)
    seen = pg.evaluate("() => window.__cvProgress")
    layers = [t for t in seen if t.startswith("reading the prompt: layer ")]
    assert layers, f"the prompt pass was never shown as a phase: {seen[:10]}"
    first_token = next(i for i, t in enumerate(seen) if t.startswith("generating"))
    assert all(seen.index(t) < first_token for t in layers), seen[:12]
    timings["large_prompt_phase_updates_seen"] = len(layers)
    info = json.loads((work / "big_bytes.json").read_text())
    timings["large_P"], timings["large_T"] = info["P"], info["T"]
    timings["large_bytes_to_browser"] = info["total"]
    timings["large_bytes_front_end_bundle"] = info["esm"]
    assert big.locator(".cv-timeline .cv-tok").count() == info["P"] + info["T"]
    graph = big.locator(".cv-graph")
    graph.scroll_into_view_if_needed()
    trips = []
    for token in (10, 120, 250, 380, 499):
        tok = graph.locator(f".cv-tok[data-token='{min(token, info['P'] - 1)}']")
        tok.scroll_into_view_if_needed()
        t_click = time.perf_counter()
        tok.click()
        _wait_for(lambda: graph.get_attribute("data-state") == "drawn" and graph.get_attribute("data-token") == str(min(token, info["P"] - 1)),
                  10, "edges for the large prompt")
        trips.append({"wall_ms": (time.perf_counter() - t_click) * 1000, "in_browser_ms": float(graph.get_attribute("data-roundtrip-ms") or "nan")})
    timings["large_click_to_edges_in_browser_ms"] = sorted(t["in_browser_ms"] for t in trips)
    timings["large_click_to_edges_wall_ms"] = sorted(t["wall_ms"] for t in trips)
    pg.screenshot(path=str(ARTIFACTS / "e2e_large.png"), full_page=False)


def test_standalone_export_renders_offline(tmp_path, browser, smollm2_trace):
    """export_html's page: no server, no network; the views render and react locally."""
    from corevital_widgets.widgets import export_html

    tr = smollm2_trace
    page = export_html(tr, tmp_path / "export.html", selection={"token": 6, "layer": 2, "head": 1})
    requests: list[str] = []
    pg = browser.new_page(viewport={"width": 1300, "height": 1000})
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("request", lambda r: requests.append(r.url))
    pg.goto(page.as_uri())
    pg.wait_for_selector("body[data-rendered='1'] .cv-heatmap[data-cells]", timeout=30_000)
    assert pg.locator(".cv-timeline .cv-tok").count() == tr.n_prompt + tr.n_steps
    assert pg.locator(".cv-heatmap").get_attribute("data-cells") == str(tr.n_layers * tr.n_heads)
    assert pg.locator(".cv-badge .cv-flag.cv-fired").count() == len(tr.health.fired)
    # the badge says the verdict's sentence and narrative (the page's text-only copy is gone once it renders)
    v = tr.verdict()
    assert pg.locator(".cv-badge").get_attribute("data-verdict") == v.color
    assert pg.locator(".cv-badge .cv-verdict").inner_text().strip() == v.sentence
    rest = v.narrative[len(v.sentence):].strip()
    if rest:
        assert pg.locator(".cv-badge .cv-narrative").inner_text().strip() == rest
    assert pg.locator("#corevital-verdict").count() == 0
    g = pg.locator(".cv-graph")
    drawn = json.loads(g.get_attribute("data-edges"))
    keys, weights = tr.attends_to(6, 2, 1)
    keep = weights >= 0.02
    assert [k for k, _ in drawn] == keys[keep].tolist()
    # local interactions work without a kernel: metric colours, heatmap source
    gen = pg.locator(".cv-timeline .cv-gen")
    before = gen.evaluate_all("els => els.map(e => e.style.background)")
    pg.locator(".cv-metric").select_option("top_k_margin")
    assert gen.evaluate_all("els => els.map(e => e.style.background)") != before
    pg.locator(".cv-heat-source").select_option("prompt")
    pg.locator(".cv-heat-value").select_option("sink")
    assert pg.locator(".cv-heatmap").get_attribute("data-value") == "sink"
    pg.screenshot(path=str(ARTIFACTS / "export_offline.png"), full_page=True)
    pg.close()
    assert not errors, errors
    assert all(u.startswith(("file:", "blob:", "data:")) for u in requests), requests


def test_dashboard_in_notebook7(tmp_path, browser, smollm2_trace):
    """The same views in Notebook 7 (anywidget's front-end API only, no JupyterLab internals)."""
    import importlib.util

    if importlib.util.find_spec("notebook") is None or not importlib.util.find_spec("notebook").origin:
        pytest.skip("Notebook 7 is not installed (pip install 'notebook>=7')")
    tr = smollm2_trace
    tr.save(tmp_path / "t.cvtrace")
    nb = _notebook_of(_show_saved_trace(tmp_path / "t.cvtrace", tmp_path / "selections.jsonl"))
    (tmp_path / "n7.ipynb").write_text(json.dumps(nb))
    server = _start_server(tmp_path, "notebook")
    info = next(server)
    try:
        pg = browser.new_page(viewport={"width": 1300, "height": 1000})
        pg.goto(f"{info['base']}/notebooks/n7.ipynb?token={info['token']}")
        pg.wait_for_selector(".jp-Cell .jp-InputArea-editor", timeout=60_000)
        try:
            pg.locator(".jp-Dialog .jp-mod-accept").click(timeout=5_000)
        except Exception:
            pass
        _run_cell(pg, 0)
        pg.wait_for_selector(".cv-heatmap[data-cells]", timeout=120_000)
        assert pg.locator(".cv-timeline .cv-tok").count() == tr.n_prompt + tr.n_steps
        assert pg.get_attribute(".cv-heatmap", "data-cells") == str(tr.n_layers * tr.n_heads)
        graph = pg.locator(".cv-graph")
        graph.locator(".cv-graph-layer").select_option("4")
        graph.locator(".cv-graph-head").select_option("3")
        graph.locator(".cv-tok[data-token='5']").click()
        _wait_for(lambda: graph.get_attribute("data-state") == "drawn" and graph.get_attribute("data-token") == "5", 10, "edges")
        _wait_for(lambda: any(s["token"] == 5 and s["layer"] == 4 for s in _selections(tmp_path)), 10, "selection in Python")
        keys, w = tr.attends_to(5, 4, 3)
        assert [k for k, _ in json.loads(graph.get_attribute("data-edges"))] == keys[w >= 0.02].tolist()
        pg.screenshot(path=str(ARTIFACTS / "notebook7.png"), full_page=False)
        pg.close()
    finally:
        server.close()


def _dataset_notebook(ts_dir: Path, correct: list[bool], log: Path) -> dict:
    src = (
        "import json\n"
        "from corevital_widgets import DatasetView, TraceSet\n"
        f"ts = TraceSet.load({str(ts_dir)!r})\n"
        f"view = DatasetView(ts, {correct!r})\n"
        f"view.observe(lambda ch: open({str(log)!r}, 'a').write(json.dumps({{'row': view.row, 'loaded_row': ch['new']}}) + '\\n'),\n"
        "             names='loaded_row')\n"
        "view"
    )
    return _notebook_of(src)


def test_dataset_view_in_jupyterlab(lab, browser, smollm2_traceset):
    """The dataset view of a real TraceSet: rows, sorting by risk, the text filter, a row click that
    makes the kernel load that trace into the dashboard, the badge's risk, the logit-lens view."""
    from corevital_widgets import DatasetView

    ts, _, correct = smollm2_traceset
    py = DatasetView(ts, correct)  # what the kernel computes, computed here too
    n = len(ts)
    log = lab["work"] / "dataset_rows.jsonl"
    (lab["work"] / "dataset.ipynb").write_text(json.dumps(_dataset_notebook(ts.out_dir, correct, log)))
    pg, errors = _open_notebook(lab, browser, "dataset.ipynb", "cv-dataset")
    try:
        _run_cell(pg, 0)
        view = pg.locator(".cv-dataset")
        view.wait_for(timeout=120_000)
        rows = view.locator(".cv-ds-table tbody tr")
        assert view.get_attribute("data-rows") == str(n) and rows.count() == n
        order = lambda: [int(x) for x in rows.evaluate_all("els => els.map(e => e.dataset.row)")]  # noqa: E731
        assert order() == list(range(n))

        # sorting by risk: one click = riskiest first, the next = the other way
        view.locator("th[data-col='risk']").click()
        _wait_for(lambda: view.get_attribute("data-sort") == "risk", 5, "sort by risk")
        assert order() == np.argsort(-py.risks, kind="stable").tolist()
        # rows outside the risk model's calibrated range carry no number and sort last
        shown = rows.evaluate_all("els => els.map(e => e.dataset.risk === undefined ? null : Number(e.dataset.risk))")
        known = sorted((r for r in py.risks.tolist() if np.isfinite(r)), reverse=True)
        assert shown == known + [None] * (n - len(known))
        withheld = rows.evaluate_all("els => els.map(e => e.querySelector('.cv-ds-risk-cell').textContent)")
        assert withheld.count("n/s") == sum(py.rows["risk_withheld"])
        view.locator("th[data-col='risk']").click()
        _wait_for(lambda: view.get_attribute("data-desc") == "false", 5, "ascending")
        assert order() == np.argsort(py.risks, kind="stable").tolist()

        # the text filter keeps the rows whose prompt or answer contains it
        hits = lambda w: [i for i in range(n) if w in py.rows["prompt"][i].lower() or w in py.rows["answer"][i].lower()]  # noqa: E731
        word = next(w for w in sorted({w for p in py.rows["prompt"] for w in p.lower().split() if w.isalpha() and len(w) > 4})
                    if 0 < len(hits(w)) < n)  # a word some rows have and others do not
        keep = hits(word)
        view.locator(".cv-ds-query").fill(word)
        _wait_for(lambda: rows.count() == len(keep), 5, "filtered rows")
        assert sorted(order()) == keep
        view.locator(".cv-ds-query").fill("")
        _wait_for(lambda: rows.count() == n, 5, "all rows again")

        # a click on a row: the kernel loads that trace and the dashboard below shows it
        i = n - 2
        want = ts[i]
        t_click = time.perf_counter()
        view.locator(f"tr[data-row='{i}']").click()
        _wait_for(lambda: view.get_attribute("data-loaded") == str(i), 20, "the kernel to load the clicked row")
        click_to_dashboard_ms = (time.perf_counter() - t_click) * 1000
        logged = [json.loads(line) for line in log.read_text().splitlines()]
        assert logged[-1] == {"row": i, "loaded_row": i}
        assert view.locator("tr.cv-ds-selected").count() == 1
        assert view.locator("tr.cv-ds-selected").get_attribute("data-row") == str(i)
        dash = view.locator(".cv-ds-dashboard")
        dash.locator(".cv-heatmap[data-cells]").wait_for(timeout=10_000)
        _wait_for(lambda: dash.locator(".cv-timeline .cv-tok").count() == want.n_prompt + want.n_steps, 10, "the row's tokens")
        assert dash.locator(".cv-timeline .cv-gen").count() == want.n_steps
        assert dash.locator(".cv-badge").get_attribute("data-verdict") == want.verdict().color

        # the badge shows the risk Python computes for that trace (and the table shows for that row)
        risk = dash.locator(".cv-badge .cv-risk")
        expected = py.risk_model.predict_proba(want)
        shown = trace_risk(want, py.risk_model)
        if shown.shown is None:  # outside the range it was calibrated on: no number anywhere
            assert py.rows["risk"][i] is None and py.rows["risk_withheld"][i]
            assert risk.get_attribute("data-risk") is None and "not shown" in risk.inner_text()
            assert "no probability shown" in want.summary()
        else:
            assert float(risk.get_attribute("data-risk")) == expected == py.rows["risk"][i]
            assert risk.inner_text().strip() == f"risk {expected:.2f} ({shown.label})"
            assert f"risk: {expected:.2f} ({shown.description})" in want.summary()

        # the logit lens: layers x steps, T x L cells, the layer's top-1 token on hover
        heat = dash.locator(".cv-heatmap")
        heat.locator(".cv-heat-source").select_option("lens")
        _wait_for(lambda: heat.get_attribute("data-value") == "lens_entropy", 5, "the lens view")
        T, L = want.layers.lens_entropy.shape
        cells = (heat.get_attribute("data-cells"), heat.get_attribute("data-rows"), heat.get_attribute("data-cols"))
        assert cells == (str(T * L), str(L), str(T))
        box = heat.locator("canvas").bounding_box()
        heat.locator("canvas").hover(position={"x": 34 + 2, "y": 16 + 2})  # step 0, layer 0 (lensLayout's margins)
        tip = heat.locator(".cv-tip")
        tip.wait_for(state="visible", timeout=5_000)
        assert tip.inner_text().startswith("step 0") and "layer 0" in tip.inner_text() and "top-1" in tip.inner_text()
        # a click on a cell selects its step (and layer): the timeline follows
        cw, ch = (box["width"] - 40) / T, (box["height"] - 20) / L  # lensLayout: 34 + 6 px margins across, 16 + 4 down
        s_click = min(2, T - 1)
        heat.locator("canvas").click(position={"x": 34 + (s_click + 0.5) * cw, "y": 16 + 3.5 * ch})
        _wait_for(lambda: dash.locator(".cv-timeline").get_attribute("data-step") == str(s_click), 5, "the clicked step")
        assert heat.get_attribute("data-value") == "lens_entropy"
        pg.screenshot(path=str(ARTIFACTS / "e2e_dataset.png"), full_page=True)

        # a second row replaces the trace
        j = 0
        view.locator(f"tr[data-row='{j}']").click()
        _wait_for(lambda: view.get_attribute("data-loaded") == str(j), 20, "the second row")
        _wait_for(lambda: dash.locator(".cv-timeline .cv-tok").count() == ts[j].n_prompt + ts[j].n_steps, 10, "the second row's tokens")
        timings = json.loads((ARTIFACTS / "e2e_timings.json").read_text()) if (ARTIFACTS / "e2e_timings.json").exists() else {}
        timings["dataset_row_click_to_dashboard_ms"] = click_to_dashboard_ms
        (ARTIFACTS / "e2e_timings.json").write_text(json.dumps(timings, indent=2))
        assert not errors, errors
    finally:
        pg.close()


def _bent_head_trace(smollm2):
    """SmolLM2 with one mid-layer head bent (its queries x30, so it collapses onto one key): a run
    the shipped baseline calls unusual, blamed on that layer and head (as tests/test_verdict.py)."""
    from corevital_widgets import analyze
    from corevital_widgets.analysis.ordinary_prompts import EVALUATION_PROMPTS, chat_or_plain

    from .test_faults import bent_head_hook

    model, tok = smollm2
    layer, head = 15, 4
    handle = bent_head_hook(model.model.layers[layer].self_attn, head)
    try:
        text, chat = EVALUATION_PROMPTS[5]
        return analyze(model, chat_or_plain(tok, text, chat), tok, max_new_tokens=32), layer, head
    finally:
        handle.remove()


def test_verdict_blame_and_vs_normal_in_jupyterlab(lab, browser, smollm2):
    """The badge's verdict sentence, its alarm rate in the tooltip, a click on the blamed layer
    (it reaches Python and selects that layer and head), and the heatmap's "vs normal" mode
    outlining exactly the heads Python calls unusual."""
    from corevital_widgets.analysis.baseline import HEAD_STATS
    from corevital_widgets.analysis.registry import find_baseline

    trace, layer, head = _bent_head_trace(smollm2)
    v = trace.verdict()
    assert v.color == "yellow" and v.blame and v.blame[0].layer == layer, v.sentence
    work = lab["work"]
    trace.save(work / "bent.cvtrace")
    log = work / "bent_selections.jsonl"
    (work / "verdict.ipynb").write_text(json.dumps(_notebook_of(_show_saved_trace(work / "bent.cvtrace", log))))
    pg, errors = _open_notebook(lab, browser, "verdict.ipynb", "cv-verdict")
    try:
        _run_cell(pg, 0)
        dash = pg.locator(".cv-dashboard")
        dash.locator(".cv-heatmap[data-cells]").wait_for(timeout=120_000)
        badge = dash.locator(".cv-badge")
        assert badge.get_attribute("data-verdict") == "yellow"
        assert badge.locator(".cv-verdict").inner_text().strip() == v.sentence
        assert f"layer {layer}" in v.sentence
        title = badge.locator(".cv-light").get_attribute("title")
        assert v.calibration in title and "probability 5%" in title
        # blame: Python's words, the top entry on the bent layer; a click selects its layer and head
        jumps = badge.locator(".cv-blame-jump")
        assert jumps.count() == min(3, len(v.blame))
        assert jumps.first.inner_text().strip() == v.blame[0].text()
        reason = v.blame[0].reasons[0]
        assert head in reason.heads
        jumps.first.click()
        seen = _wait_for(lambda: [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else None, 10,
                         "the blame click reaching Python")
        assert (seen[-1]["layer"], seen[-1]["head"]) == (layer, reason.heads[0])
        heat = dash.locator(".cv-heatmap")
        graph = dash.locator(".cv-graph")
        _wait_for(lambda: graph.locator(".cv-graph-layer").input_value() == str(layer), 5, "the graph on the blamed layer")
        # "vs normal": the click showed the blamed statistic; the cells outlined are the ones
        # Python finds beyond the alarm line, the bent head among them
        heat.locator(".cv-heat-color").select_option("z")
        _wait_for(lambda: heat.get_attribute("data-color-mode") == "z", 5, "vs normal mode")
        source, value = reason.statistic.split("_", 1)
        assert (heat.locator(".cv-heat-source").input_value(), heat.get_attribute("data-value")) == \
            (source, {"log_basin": "basin"}.get(value, value))
        dev = find_baseline(trace).deviation(trace)
        z = dev.z[reason.statistic]
        assert reason.statistic in HEAD_STATS and abs(z[layer, reason.heads[0]]) > dev.threshold
        assert int(heat.get_attribute("data-unusual")) == int(np.sum(np.abs(z[np.isfinite(z)]) > dev.threshold))
        assert "vs this model's normal" in heat.locator(".cv-heat-z-legend").inner_text()
        pg.screenshot(path=str(ARTIFACTS / "e2e_verdict_blame.png"), full_page=True)

        # a theme switch (JupyterLab's own menu) redraws the canvases at once, not at the next click:
        # the heatmap's label text was light on the dark theme and is dark on the light one
        def label_luminance() -> float:
            return heat.locator("canvas").evaluate(
                """c => { const d = c.getContext('2d').getImageData(0, 0, 28, c.height).data; let best = -1, lum = 0;
                          for (let i = 0; i < d.length; i += 4) if (d[i + 3] > best) { best = d[i + 3];
                            lum = (0.2126 * d[i] + 0.7152 * d[i + 1] + 0.0722 * d[i + 2]) / 255; }
                          return lum; }""")

        assert label_luminance() > 0.5
        draws = int(heat.get_attribute("data-theme-draws") or 0)
        pg.locator(".lm-MenuBar-itemLabel", has_text="Settings").click()
        pg.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
        pg.locator(".lm-Menu-itemLabel", has_text="JupyterLab Light").click()
        _wait_for(lambda: int(heat.get_attribute("data-theme-draws") or 0) > draws, 10, "a redraw on the theme switch")
        _wait_for(lambda: label_luminance() < 0.5, 5, "dark label text on the light theme")
        pg.screenshot(path=str(ARTIFACTS / "e2e_theme_light.png"), full_page=False)
        assert not errors, errors
    finally:
        pg.close()
