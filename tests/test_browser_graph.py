"""End to end: the attention graph of a long prompt in real JupyterLab + headless Chromium.

A saved SmolLM2 trace of a ~300-token chat prompt is shown in a notebook; the last prompt token is
selected, so its strongest edge goes to token 0 ('<|im_start|>', the attention sink), far above the
visible text of the graph's scroll box. That edge must end at a labelled marker at the box's edge whose
weight is the kernel's sparse query's, a click on it scrolls token 0 into view, and scrolling to the
bottom again and again must not grow the scroll area. Helpers and fixtures come from
test_browser_widgets.py (one JupyterLab server and one Chromium per module).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from .test_browser_widgets import (  # noqa: F401  (lab, browser: fixtures used by name)
    ARTIFACTS,
    _notebook_of,
    _open_notebook,
    _run_cell,
    _show_saved_trace,
    _wait_for,
    browser,
    lab,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

N_FACTS = 16  # ~300 prompt tokens with the chat template: long enough to scroll, quick to analyze


@pytest.fixture(scope="module")
def long_trace(smollm2):
    from corevital_widgets import analyze

    model, tok = smollm2
    text = " ".join(f"Fact {i}: the sky scatters blue light more than red light." for i in range(N_FACTS))
    prompt = tok.apply_chat_template([{"role": "user", "content": text + " Summarise."}], tokenize=False, add_generation_prompt=True)
    return analyze(model, prompt, tok, max_new_tokens=2)


def _in_view(token_box: dict, box: dict) -> bool:
    mid = token_box["y"] + token_box["height"] / 2
    return box["y"] <= mid <= box["y"] + box["height"]


def _logged_tokens(log) -> list[int]:
    """The tokens of the selections the kernel logged so far (a line still being written is skipped)."""
    out = []
    for line in (log.read_text().splitlines() if log.exists() else []):
        try:
            out.append(json.loads(line)["token"])
        except ValueError:
            pass
    return out


def _next_frames(pg) -> None:
    pg.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(null))))")


def test_offscreen_edge_markers_and_stable_scroll(lab, browser, long_trace):
    from corevital_widgets.widgets.payload import decode_arrays, edges_payload

    trace = long_trace
    P = trace.n_prompt
    assert P >= 250 and trace.prompt_tokens[0] == "<|im_start|>"
    last = P - 1
    # what the widget's kernel side sends for this click (the default view: all layers, all heads)
    meta, arrays = decode_arrays(edges_payload(trace, last, None, None))
    keys, weights = arrays["out_keys"], arrays["out_weights"]
    assert meta["token"] == last and int(keys[np.argmax(weights)]) == 0, "token 0 should be the strongest edge"
    w0 = float(weights[keys == 0][0])
    np.testing.assert_array_equal(weights, trace.attends_to(last)[1].astype(np.float32))

    work = lab["work"]
    trace.save(work / "long.cvtrace")
    log = work / "long_selections.jsonl"
    (work / "graph.ipynb").write_text(json.dumps(_notebook_of(_show_saved_trace(work / "long.cvtrace", log))))
    pg, errors = _open_notebook(lab, browser, "graph.ipynb", "cv-graph")
    try:
        _run_cell(pg, 0)
        pg.locator(f".cv-dashboard .cv-graph[data-tokens='{P}']").wait_for(timeout=120_000)
        graph = pg.locator(".cv-dashboard .cv-graph")
        body = graph.locator(".cv-graph-body")
        tok = lambda i: graph.locator(f".cv-graph-inner .cv-tok[data-token='{i}']")  # noqa: E731
        graph.scroll_into_view_if_needed()
        sizes = body.evaluate("b => [b.scrollHeight, b.clientHeight]")
        assert sizes[0] > 1.5 * sizes[1], f"the prompt should not fit in the box: {sizes}"

        # the last prompt token, at the bottom of the box: its strongest edge goes to token 0, far above
        # (its neighbour first: the view may open on the last token already, and the click must reach the kernel)
        body.evaluate("b => { b.scrollTop = b.scrollHeight; }")
        for t in (last - 1, last):
            tok(t).click()
            _wait_for(lambda t=t: graph.get_attribute("data-state") == "drawn" and graph.get_attribute("data-token") == str(t), 10,
                      f"edges for token {t}")
        _wait_for(lambda: _logged_tokens(log)[-1:] == [last], 10, "the click reaching the kernel")
        # the edges drawn are the kernel's answer to this click
        drawn = json.loads(graph.get_attribute("data-edges"))
        keep = weights >= 0.02  # the view's default threshold
        assert [k for k, _ in drawn] == keys[keep].tolist()
        np.testing.assert_allclose([w for _, w in drawn], weights[keep], rtol=1e-5, atol=1e-6)
        assert not _in_view(tok(0).bounding_box(), body.bounding_box())
        marker = graph.locator(".cv-marker-top .cv-marker[data-token='0'][data-dir='out']")
        marker.wait_for(timeout=5_000)
        assert marker.inner_text() == f"→ token 0 '<|im_start|>' {w0:.2f}"
        assert float(marker.get_attribute("data-weight")) == w0  # exactly the kernel's float32 weight
        # the strongest edge comes first; markers sit side by side, none over another, none beyond the strip
        strip = graph.locator(".cv-marker-top")
        chips = strip.locator(".cv-marker:not(.cv-marker-probe)")
        assert chips.first.get_attribute("data-token") == "0"
        boxes = [chips.nth(i).bounding_box() for i in range(chips.count())]
        sbox = strip.bounding_box()
        for a, b in zip(boxes, boxes[1:]):
            assert a["x"] + a["width"] <= b["x"] + 0.5
        assert all(sbox["x"] - 0.5 <= b["x"] and b["x"] + b["width"] <= sbox["x"] + sbox["width"] + 0.5 for b in boxes)
        # the edge's arc ends at the box's top edge under the marker; the canvas lies behind the text box
        assert graph.evaluate("""g => { const c = g.querySelector('canvas.cv-edges'), b = g.querySelector('.cv-graph-body');
            return !b.contains(c) && Number(getComputedStyle(c).zIndex) < Number(getComputedStyle(b).zIndex)
              && getComputedStyle(b).backgroundColor === 'rgba(0, 0, 0, 0)'; }""")
        legend = graph.locator(".cv-graph-legend").inner_text()
        assert "attends to" in legend and "attended by" in legend
        graph.screenshot(path=str(ARTIFACTS / "e2e_graph_marker.png"))

        # a click on the marker scrolls the box to token 0 (the selection stays) and highlights it
        marker.click()
        assert "cv-flash" in (tok(0).get_attribute("class") or "")
        _wait_for(lambda: _in_view(tok(0).bounding_box(), body.bounding_box()), 5, "token 0 scrolled into view")
        assert graph.get_attribute("data-token") == str(last)
        # the markers follow the scroll: none for token 0 now; the selected token is below the box
        _next_frames(pg)
        _wait_for(lambda: graph.locator(".cv-marker[data-token='0']").count() == 0, 5, "token 0's marker gone")
        assert graph.locator(f".cv-marker-bottom .cv-marker-self[data-token='{last}']").count() == 1
        graph.screenshot(path=str(ARTIFACTS / "e2e_graph_scrolled.png"))

        # the scroll area is stable: scrolling to the bottom again and again never grows it
        heights = [body.evaluate("b => b.scrollHeight")]
        for _ in range(5):
            body.evaluate("b => { b.scrollTop = b.scrollHeight; }")
            _next_frames(pg)
            heights.append(body.evaluate("b => b.scrollHeight"))
            body.evaluate("b => { b.scrollTop = 0; }")
            _next_frames(pg)
        body.hover()
        for _ in range(3):  # and with the mouse wheel
            pg.mouse.wheel(0, 5000)
            _next_frames(pg)
            heights.append(body.evaluate("b => b.scrollHeight"))
        _wait_for(lambda: body.evaluate("b => Math.abs(b.scrollTop + b.clientHeight - b.scrollHeight) <= 1"), 5, "the wheel at the bottom")
        heights.append(body.evaluate("b => b.scrollHeight"))
        assert len(set(heights)) == 1, heights

        # "attended by": token 0 (the sink) is attended by every token; those below the box end at
        # dashed "←" markers at the bottom edge, strongest first, then "+k more"
        body.evaluate("b => { b.scrollTop = 0; }")
        graph.locator(".cv-incoming").check()
        tok(0).click()
        _wait_for(lambda: graph.get_attribute("data-token") == "0" and graph.get_attribute("data-in-edges") not in (None, "[]"), 10,
                  "incoming edges of token 0")
        queries, wq = trace.attended_by(0)
        below = graph.locator(".cv-marker-bottom .cv-marker-in")
        below.first.wait_for(timeout=5_000)
        q = int(below.first.get_attribute("data-token"))
        assert below.first.inner_text().startswith(f"← token {q} ")
        assert float(below.first.get_attribute("data-weight")) == float(wq[queries == q][0])
        shown = [float(w) for w in below.evaluate_all("els => els.map(e => e.dataset.weight)")]
        assert shown == sorted(shown, reverse=True)
        assert graph.locator(".cv-marker-bottom .cv-marker-more").count() == 1
        graph.screenshot(path=str(ARTIFACTS / "e2e_graph_incoming.png"))
        assert not errors, errors
    finally:
        pg.close()
