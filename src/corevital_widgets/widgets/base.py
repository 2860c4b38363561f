"""The base of every corevital anywidget: the one front-end bundle, the static face displayed
before the live view (:mod:`.static_face`), the kernel ping, and callbacks whose output goes to
the cell that showed the view."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from .static_face import face_bundle

STATIC = Path(__file__).resolve().parent.parent / "static"
ESM_PATH = STATIC / "widget.js"

_MISSING_ESM = (
    "export default { render({ el }) { el.textContent = 'corevital_widgets: the front end is not built "
    "(run `make js` or `npm ci && npm run build` in the repository)'; } };"
)


def _esm_source() -> str:
    return ESM_PATH.read_text(encoding="utf-8") if ESM_PATH.exists() else _MISSING_ESM



class ViewWidget(anywidget.AnyWidget):
    """One corevital view: ``view`` names what the front end draws; ``face_id`` names its static
    face, which the front end hides once it renders. Subclasses say what the face shows
    (:meth:`text_face`, :meth:`face_svg`)."""

    _esm = _esm_source()

    view = traitlets.Unicode("dashboard").tag(sync=True)
    #: names this view's static face (see :mod:`.static_face`): the front end hides the face once it renders
    face_id = traitlets.Unicode().tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("face_id", uuid.uuid4().hex)
        super().__init__(**kwargs)
        #: display ids of this view's static faces and widget outputs in the notebook
        self._face_displays: list[str] = []
        self._widget_displays: list[str] = []
        self._shown_in_cell: int | None = None
        self._cell_parent: dict[str, Any] | None = None
        self.on_msg(self._handle_message)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The widget view, with a readable text/plain beside it (:meth:`text_face`) instead of
        the object's repr: what terminals and notebook previews without widgets show."""
        data = super()._repr_mimebundle_(**kwargs)
        bundle = data[0] if isinstance(data, tuple) else data
        if isinstance(bundle, dict):
            bundle["text/plain"] = self.text_face()
        return data

    def _ipython_display_(self, **kwargs: Any) -> None:
        """Display the static face, then the live view (two outputs; see :mod:`.static_face`).

        When ``show(model, prompt)`` already displayed this view in the running cell, the cell's
        return value does not display it a second time."""
        from IPython import get_ipython

        ip = get_ipython()
        if self._shown_in_cell is not None and getattr(ip, "execution_count", None) == self._shown_in_cell:
            self._shown_in_cell = None
            return
        self._display_with_face()

    def _display_with_face(self) -> None:
        from IPython.display import display

        from IPython import get_ipython

        # the header of the cell showing this view: what a selection callback prints goes there
        # (not to the log console, where output of a widget message would go otherwise)
        self._cell_parent = getattr(get_ipython(), "get_parent", lambda: None)() or self._cell_parent
        face_display = uuid.uuid4().hex
        display(self.face_bundle(), raw=True, display_id=face_display)
        self._face_displays.append(face_display)
        widget_display = uuid.uuid4().hex
        display(self._widget_bundle(), raw=True, display_id=widget_display)
        self._widget_displays.append(widget_display)

    def _widget_bundle(self) -> dict[str, Any]:
        b = self._repr_mimebundle_()
        return b[0] if isinstance(b, tuple) else b

    def text_face(self) -> str:
        """What this view says as plain text."""
        return f"corevital {self.view}"

    def face_svg(self) -> str | None:
        """The static picture of this view as SVG text (None: no picture, the text face only)."""
        return None

    def face_bundle(self) -> dict[str, str]:
        """The static face's output bundle (``text/html``, and ``image/svg+xml`` with a picture)."""
        svg = self.face_svg()
        note = ("Static picture of this corevital view as saved; where widgets run, the live view below replaces it."
                if svg is not None else "")
        return face_bundle(svg, self.face_id, self.text_face(), note)

    def _update_faces(self, text_too: bool = False) -> None:
        """Redraw the static faces this view displayed (and, with ``text_too``, the widget
        outputs' text/plain: once, when a live run's trace arrives)."""
        if not self._face_displays:
            return
        from IPython.display import update_display

        bundle = self.face_bundle()
        for display_id in self._face_displays:
            update_display(bundle, raw=True, display_id=display_id)
        if text_too:
            widget = self._widget_bundle()
            for display_id in self._widget_displays:
                update_display(widget, raw=True, display_id=display_id)

    def _handle_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        # the front end asks whether a kernel holds this view (a view restored from saved widget
        # state without its kernel gets no answer, and says so instead of waiting)
        if isinstance(content, dict) and content.get("type") == "ping":
            self.send({"type": "pong"})

    @contextlib.contextmanager
    def _output_to_cell(self) -> Iterator[None]:
        """Route what callbacks print or display to the cell that showed this view."""
        from IPython import get_ipython

        ip = get_ipython()
        setter = getattr(ip, "set_thread_parent", None)
        if self._cell_parent is None or setter is None:
            yield
            return
        tokens = setter(self._cell_parent)
        try:
            yield
        finally:
            ip.reset_thread_parent(tokens)

    def sync_nbytes(self) -> dict[str, int]:
        """Bytes this widget's state sends to the browser when it is displayed: the JSON part
        (``esm``: of which the front-end bundle), the binary buffers, and their ``total``."""
        from ipywidgets.widgets.widget import _remove_buffers

        state, _, buffers = _remove_buffers(self.get_state())
        js = len(json.dumps(state, separators=(",", ":"), default=str).encode())
        nbuf = sum(memoryview(b).nbytes for b in buffers)
        return {"json": js, "esm": len(self._esm.encode()), "buffers": nbuf, "total": js + nbuf}

