"""corevital.explore in a real JupyterLab + Chromium: type a prompt, Run, tokens stream in, Stop
mid-run (a partial trace that says it stopped; the model unchanged), two runs one word apart,
pick both: the compare view marks the changed prompt token, shows the difference heatmap, and
its ranked table holds exactly Python's ``compare(...).to_pandas()``."""

from __future__ import annotations

import json

import pytest

from .test_browser_widgets import (  # noqa: F401  (pytest fixtures)
    ARTIFACTS, _notebook_of, _open_notebook, _run_cell, _wait_for, _wait_idle_cell, browser, lab,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SETUP = (
    "import corevital_widgets as corevital\n"
    "model, tok = corevital.load_default_model()\n"
    "def snapshot(m):\n"
    "    return [m.config._attn_implementation, m.training, sum(len(x._forward_hooks) + len(x._forward_pre_hooks) "
    "for x in m.modules()), m.generation_config.to_json_string()]\n"
    "before = snapshot(model)\n"
    "ex = corevital.explore(model, tok)\n"
    "ex"
)
REPORT = (
    "import json\n"
    "df = ex.compare_view.to_pandas()\n"
    "json.dump({'steps': [t.n_steps for t in ex.runs], 'stopped': [t.meta.get('stopped') for t in ex.runs],\n"
    "           'unchanged': snapshot(model) == before, 'picked': ex.controls.picked,\n"
    "           'table': df[['stat', 'layer', 'head', 'a', 'b', 'delta']].astype(object).where(df.notna(), None).values.tolist()},\n"
    "          open('explore_report.json', 'w'))"
)


def _set(pg, selector: str, value: str) -> None:
    box = pg.locator(selector)
    box.fill(value)
    box.dispatch_event("change")


def _streamed(timeline) -> int:
    done = (timeline.get_attribute("data-progress") or "").split("/")[0]
    return int(done) if done.isdigit() else 0


def _run_prompt(pg, text: str, max_tokens: int) -> None:
    _set(pg, ".cv-explorer .cv-ex-max", str(max_tokens))
    pg.locator(".cv-explorer .cv-ex-prompt").fill(text)
    pg.locator(".cv-explorer .cv-ex-run").click()


def test_explore_run_stop_and_compare_in_jupyterlab(lab, browser):
    work = lab["work"]
    (work / "explore.ipynb").write_text(json.dumps(_notebook_of(SETUP, REPORT)))
    pg, errors = _open_notebook(lab, browser, "explore.ipynb", "cv-explore")
    try:
        _run_cell(pg, 0)
        ex = pg.locator(".cv-explorer")
        ex.wait_for(timeout=120_000)
        _wait_idle_cell(pg, 0, 120)
        rows = pg.locator(".cv-ex-history tr.cv-ex-row")
        # 1. a long run, stopped once tokens stream in
        _run_prompt(pg, "Write a long story about a dragon and a knight.", 200)
        tl = pg.locator(".cv-dashboard .cv-timeline")
        _wait_for(lambda: ex.get_attribute("data-running") == "1", 20, "the run to start")
        _wait_for(lambda: _streamed(tl) >= 3, 120, "tokens streaming in")
        pg.locator(".cv-explorer .cv-ex-stop").click()
        _wait_for(lambda: ex.get_attribute("data-running") == "0" and rows.count() == 1, 60, "the stopped run in the history")
        assert rows.first.locator(".cv-ex-stopped").count() == 1
        assert "stopped after" in pg.locator(".cv-ex-status").inner_text()
        # the stopped run's trace is on the dashboard
        _wait_for(lambda: pg.locator(".cv-dashboard .cv-badge").get_attribute("data-verdict") in ("green", "yellow", "red"),
                  30, "the partial trace's verdict")
        # 2. two runs one word apart
        _run_prompt(pg, "What is the capital of France?", 6)
        _wait_for(lambda: ex.get_attribute("data-running") == "0" and rows.count() == 2, 120, "run 2")
        _run_prompt(pg, "What is the capital of Spain?", 6)
        _wait_for(lambda: ex.get_attribute("data-running") == "0" and rows.count() == 3, 120, "run 3")
        # 3. pick both: the compare view (the newest run is picked, i.e. shown, after it ends: unpick it first)
        assert pg.locator(".cv-ex-history tr[data-run-id='3']").get_attribute("data-pick") == "shown"
        pg.locator(".cv-ex-history tr[data-run-id='3']").click()
        pg.locator(".cv-ex-history tr[data-run-id='2']").click()
        pg.locator(".cv-ex-history tr[data-run-id='3']").click()
        cmp = pg.locator(".cv-compare[data-ready='1']")
        cmp.wait_for(timeout=30_000)
        _wait_for(lambda: cmp.is_visible(), 10, "the compare view shown")
        assert cmp.get_attribute("data-same-prompt") == "false" and cmp.get_attribute("data-same-shape") == "true"
        assert [t.strip() for t in cmp.locator(".cv-cmp-prompt[data-side='a'] .cv-changed").all_inner_texts()] == ["France"]
        assert [t.strip() for t in cmp.locator(".cv-cmp-prompt[data-side='b'] .cv-changed").all_inner_texts()] == ["Spain"]
        assert cmp.locator(".cv-cmp-diff").get_attribute("data-cells") == "270"
        pg.screenshot(path=str(ARTIFACTS / "e2e_explore_compare.png"))
        page_rows = [[r.get_attribute(k) for k in ("data-stat", "data-layer", "data-head", "data-a", "data-b", "data-delta")]
                     for r in cmp.locator("tr.cv-cmp-row").all()]
        # 4. a page reload while the kernel lives (the notebook saved, as a user's would be): the
        # history, the picks and the compare view come back from the kernel
        pg.locator(".jp-Notebook").first.click()
        pg.keyboard.press("Control+s")
        _wait_for(lambda: pg.locator(".jp-mod-dirty").count() == 0, 20, "the notebook saved")
        pg.reload()
        pg.wait_for_selector(".cv-explorer[data-ready='1']", timeout=60_000)
        _wait_for(lambda: pg.locator(".cv-ex-history tr.cv-ex-row").count() == 3, 30, "the history after a reload")
        assert pg.locator(".cv-explorer").get_attribute("data-picked") == "2,3"
        pg.wait_for_selector(".cv-compare[data-ready='1']", timeout=30_000)
        # 5. what Python holds
        _run_cell(pg, 1)
        _wait_idle_cell(pg, 1, 60)
    finally:
        pg.close()
    report = json.loads((work / "explore_report.json").read_text())
    assert report["unchanged"], "the model changed"
    assert report["picked"] == [2, 3]
    assert report["stopped"][0]["by"] == "request" and 3 <= report["steps"][0] < 200 and report["steps"][1:] == [6, 6]
    assert len(page_rows) == len(report["table"]) > 0
    for shown, (stat, layer, head, a, b, delta) in zip(page_rows, report["table"]):
        assert shown[0] == stat
        assert shown[1] == ("" if layer is None else str(int(layer))) and shown[2] == ("" if head is None else str(int(head)))
        assert float(shown[3]) == pytest.approx(a, rel=1e-6) and float(shown[4]) == pytest.approx(b, rel=1e-6)
        assert float(shown[5]) == pytest.approx(delta, rel=1e-6, abs=1e-9)
    assert not errors, errors
