"""The static face: what readers without widgets see of a view, drawn in Python without a browser.

Checked against the trace itself: the badge says the verdict, the counts are the trace's, the
heatmap image's pixels are the trace's per-head values on the shared fixed scale, the edges are
``trace.attends_to``; and a view displays as face + widget, the face following the selection.
"""

from __future__ import annotations

import base64
import re
import struct
import xml.etree.ElementTree as ET
import zlib

import numpy as np
import pytest

from corevital_widgets.analysis.verdict import assess
from corevital_widgets.widgets import components as C
from corevital_widgets.widgets.static_face import face_svg, heat_matrix, scales

SVG = "{http://www.w3.org/2000/svg}"


def _decode_png(data: bytes) -> np.ndarray:
    """[h, w, 3] uint8 of a truecolour, filter-0 PNG (what static_face writes), read independently."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h = size
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(h, w, 3)


def _texts(root: ET.Element) -> str:
    return "\n".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))


def _expected_heat(values: np.ndarray, key: str) -> np.ndarray:
    """The heat colour of each value, from scales.json by hand (linear ramp, clipped domain)."""
    d, stops = scales()["heat"][key], np.array(scales()["ramps"]["heat"], float)
    lo, hi = d["domain"]
    out = np.zeros(values.shape + (3,), np.uint8)
    for idx, v in np.ndenumerate(values):
        if not np.isfinite(v):
            out[idx] = 136
            continue
        t = (np.log(max(v, lo)) - np.log(lo)) / (np.log(hi) - np.log(lo)) if d.get("log") else (v - lo) / (hi - lo)
        x = min(1.0, max(0.0, t)) * 4
        i = min(3, int(np.floor(x)))
        out[idx] = np.round(stops[i] + (stops[i + 1] - stops[i]) * (x - i))
    return out


@pytest.mark.slow
def test_dashboard_face_says_what_the_trace_says(smollm2_trace):
    t = smollm2_trace
    sel = {"step": 3, "token": t.n_prompt - 2, "layer": 5, "head": 2, "metric": "surprisal"}
    svg = face_svg(t, "dashboard", sel, {"heat_source": "step", "heat_value": "entropy"})
    root = ET.fromstring(svg)  # well-formed, self-contained XML
    assert not list(root.iter(f"{SVG}script"))
    text = _texts(root)
    v = assess(t)
    assert f"{v.color.upper()} — " in text and v.sentence[:40] in text.replace("\n", " ")
    assert f"prompt {t.n_prompt} tokens" in text and f"generated {t.n_steps} tokens" in text
    assert "coloured by surprisal (bits, 0–16" in text
    # the answer's tokens are there, in order
    chips = [e.text for e in root.iter(f"{SVG}text") if e.get("font-family", "").startswith("ui-monospace")]
    assert "".join(chips).startswith("".join(p.replace("\n", "↵") for p in t.generated_tokens[:5]))
    # the heatmap: one pixel per (layer, head) of step 3, coloured on the fixed 0–10 bit scale
    img = next(root.iter(f"{SVG}image"))
    assert img.get("data-cells") == str(t.n_layers * t.n_heads)
    px = _decode_png(base64.b64decode(img.get("href").split(",", 1)[1]))
    assert px.shape == (t.n_layers, t.n_heads, 3)
    np.testing.assert_array_equal(px, _expected_heat(np.asarray(t.heads.entropy[3], float), "entropy"))
    # the selected head is outlined at its cell
    outline = [r for r in root.iter(f"{SVG}rect") if r.get("stroke") == "#d62728"]
    assert len(outline) == 1
    # the edges listed are trace.attends_to's strongest, with their weights
    keys, w = t.attends_to(sel["token"], 5, 2)
    order = np.argsort(-w, kind="stable")[:8]
    listed = re.findall(r"→ token (\d+) '.*' (\d\.\d\d)", text)
    assert [int(k) for k, _ in listed] == [int(k) for k in keys[order]]
    assert [float(x) for _, x in listed] == pytest.approx([round(float(x), 2) for x in w[order]], abs=0.006)


@pytest.mark.slow
def test_each_view_face_and_heat_sources(smollm2_trace):
    t = smollm2_trace
    for view, must in {"badge": "risk of a wrong answer", "timeline": "generated tokens coloured by entropy",
                       "heatmap": "layers (rows, 0 at top)", "graph": "attends to"}.items():
        text = _texts(ET.fromstring(face_svg(t, view)))
        assert must in text, (view, text[:300])
    m, key, caption = heat_matrix(t, "prompt", "basin", None)
    assert key == "basin" and m.shape == (t.n_layers, t.n_heads) and "basin" in caption
    np.testing.assert_array_equal(m, t.prompt.basin)
    root = ET.fromstring(face_svg(t, "heatmap", options={"heat_source": "prompt", "heat_value": "basin"}))
    px = _decode_png(base64.b64decode(next(root.iter(f"{SVG}image")).get("href").split(",", 1)[1]))
    np.testing.assert_array_equal(px, _expected_heat(np.asarray(t.prompt.basin, float), "basin"))


@pytest.mark.slow
def test_display_is_face_then_widget_and_the_face_follows_the_selection(smollm2_trace, capsys):
    """In IPython a view displays two outputs: the face (HTML + SVG, marked with the widget's
    face_id) and the widget; a selection change updates the face in place (same display id)."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    dash = C.Dashboard(smollm2_trace)
    with capture_output() as cap:
        dash._ipython_display_()
    assert len(cap.outputs) == 2
    face, widget = cap.outputs[0].data, cap.outputs[1].data
    assert f'class="cv-face cv-face-{dash.face_id}"' in face["text/html"]
    assert face["image/svg+xml"].startswith("<svg") and "text/plain" not in face
    assert "application/vnd.jupyter.widget-view+json" in widget
    assert widget["text/plain"].startswith("corevital — ")
    # small: a 24-step dashboard's face is a few kilobytes of SVG (the heatmap is a tiny PNG)
    assert len(face["image/svg+xml"]) < 40_000
    sent: list[tuple] = []
    orig = C.TraceWidget._update_faces

    def spy(self):
        sent.append((dict(self.selection), self.face_svg()))
        orig(self)

    C.TraceWidget._update_faces = spy
    try:
        dash.select(token=2, layer=1, head=0)
    finally:
        C.TraceWidget._update_faces = orig
    assert sent and sent[-1][0]["token"] == 2
    assert "prompt token 2 " in _texts(ET.fromstring(sent[-1][1]))


def test_face_ids_are_unique_and_safe():
    a, b = C.HeadHeatmap(), C.HeadHeatmap()
    assert a.face_id != b.face_id and re.fullmatch(r"[0-9a-f]{32}", a.face_id)
    bundle = a.face_bundle()  # no trace yet: the text says so, no picture
    assert "image/svg+xml" not in bundle and "no trace yet" in bundle["text/html"]


def test_a_kernel_ping_gets_a_pong():
    w = C.TokenTimeline()
    sent = []
    w.send = lambda content, buffers=None: sent.append(content)  # what the comm would carry
    w._handle_message(w, {"type": "ping"}, [])
    w._handle_message(w, {"type": "other"}, [])
    assert sent == [{"type": "pong"}]
