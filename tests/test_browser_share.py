"""Sharing a notebook, end to end in a real JupyterLab + Chromium.

A teammate opens a notebook saved with widget state: JupyterLab starts a NEW kernel, which holds
none of the widgets. The views render from the saved state, hide their static faces, and a
click on a prompt token is answered from what the view holds, or says why not, within a second
(never "waiting for the kernel…" forever). Then, with the cell re-run in the live kernel, what a
selection callback prints appears in that cell, not in JupyterLab's log console.
"""

from __future__ import annotations

import time

import nbformat
import pytest

from .test_browser_widgets import (  # noqa: F401  (pytest fixtures)
    ARTIFACTS, _notebook_of, _open_notebook, _run_cell, _wait_for, _wait_idle_cell, browser, lab,
)
from .test_notebook_quickstart import execute_notebook

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_restored_view_with_a_new_kernel_answers_from_what_it_holds(lab, browser, smollm2_trace, tmp_path):
    from nbformat.sign import NotebookNotary

    t = smollm2_trace
    work = lab["work"]
    trace_path = work / "shared.cvtrace"
    t.save(trace_path)
    saved_token, other = t.n_prompt - 3, 2
    cell = ("from corevital_widgets import load_trace, show\n"
            f"dash = show(load_trace({str(trace_path)!r}))\n"
            f"dash.select(token={saved_token}, layer=2, head=None)\n"
            "dash.on_select(lambda sel: print('picked token', sel['token']))\n"
            "dash")
    src = tmp_path / "shared.ipynb"
    authored = nbformat.from_dict(_notebook_of(cell))
    for i, c in enumerate(authored.cells):
        c["id"] = f"cell-{i}"
    nbformat.write(authored, src)
    nb, _ = execute_notebook(src, tmp_path, timeout=300)  # what the author saved, widget state included
    NotebookNotary().sign(nb)  # the author's own notebook is trusted on their machine (and here)
    nbformat.write(nb, work / "shared.ipynb")

    pg, errors = _open_notebook(lab, browser, "shared.ipynb", "cv-shared")
    try:
        g = pg.locator(".cv-dashboard .cv-graph")
        g.wait_for(timeout=60_000)
        # rendered from the saved state: the saved selection's edges are drawn, the face is hidden
        _wait_for(lambda: g.get_attribute("data-state") == "drawn", 20, "the saved edges drawn")
        assert g.get_attribute("data-token") == str(saved_token) and g.get_attribute("data-layer") == "2"
        assert pg.locator(".cv-face").count() == 1 and not pg.locator(".cv-face").is_visible()
        # every step's heatmap is in the saved state: stepping needs no kernel
        hm = pg.locator(".cv-dashboard .cv-heatmap")
        assert hm.get_attribute("data-cells") == str(t.n_layers * t.n_heads)

        time.sleep(1.0)  # the view has asked for its kernel and heard nothing
        info = g.locator(".cv-graph-info")
        g.locator(f".cv-tok[data-token='{other}']").click()
        t0 = time.perf_counter()
        _wait_for(lambda: "no kernel answers this view" in info.inner_text(), 1.0, "the kernel-less answer")
        said_in = time.perf_counter() - t0
        text = info.inner_text()
        assert f"holds the edges of token {saved_token}" in text and "re-run the cell" in text
        assert g.get_attribute("data-state") == "no_kernel"
        # back to the saved token: answered at once from what the view holds
        g.locator(f".cv-tok[data-token='{saved_token}']").click()
        _wait_for(lambda: g.get_attribute("data-state") == "drawn", 1.0, "the held edges")
        pg.screenshot(path=str(ARTIFACTS / "restored_new_kernel.png"))

        # re-run the cell in the live kernel: the new view is live, and the callback prints into the cell
        _run_cell(pg, 0)
        _wait_idle_cell(pg, 0, 120)
        g = pg.locator(".cv-dashboard .cv-graph")
        _wait_for(lambda: g.get_attribute("data-state") == "drawn", 30, "the live view's edges")
        g.locator(f".cv-tok[data-token='{other}']").click()
        _wait_for(lambda: g.get_attribute("data-state") == "drawn" and g.get_attribute("data-token") == str(other), 10,
                  "the live kernel's answer")
        out = pg.locator(".jp-Cell").nth(0).locator(".jp-OutputArea")
        _wait_for(lambda: f"picked token {other}" in out.inner_text(), 10, "the callback's print in the cell")
    finally:
        pg.close()
    assert not errors, errors
    print(f"kernel-less answer in {said_in * 1000:.0f} ms")
