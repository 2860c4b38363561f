"""The dataset view: one row per prompt of a :class:`~corevital_widgets.TraceSet`, and below it
the dashboard of the row clicked.

Python holds the data: the traces stay on disk (or in the TraceSet's memory), the table gets
compact rows (shortened prompt and answer, correct/incorrect, risk, verdict, steps, mean entropy)
as one JSON list, and a click on a row sets the synced ``row`` trait; Python then loads that
trace (``traceset[row]``) and sends its dashboard payload on this same widget model, so the
badge, timeline, heatmap and attention graph below the table show it. Sorting and filtering run
in the browser; their state is the synced ``table`` dict (kept in a saved notebook).

    ts = corevital.analyze_many(model, prompts, tok, out_dir="runs/")
    view = corevital.DatasetView(ts, labels=[grade(it, t) for it, t in zip(items, ts.to_pandas()["text"])])
    view                       # click a row; view.trace is the trace shown, view.row its index
"""

from __future__ import annotations

import math
import re
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import traitlets

from ..analysis.risk import risk_kind_label
from .components import TraceWidget

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..batch import TraceSet
    from ..analysis.risk import RiskModel
    from ..trace.trace import Trace

#: Columns of the table (``table["sort"]`` takes one of these keys).
COLUMNS: tuple[str, ...] = ("index", "prompt", "answer", "expected", "correct", "risk", "verdict", "tokens", "entropy")
CORRECT_FILTERS = ("all", "correct", "incorrect", "ungraded")
VERDICT_FILTERS = ("all", "green", "yellow", "red")
PROMPT_CHARS = 200
ANSWER_CHARS = 160
DEFAULT_TABLE: dict[str, Any] = {"sort": "index", "desc": False, "query": "", "correct": "all", "verdict": "all", "min_risk": 0.0}

# The last user turn of common chat templates (ChatML/SmolLM2/Qwen, Llama 3, Gemma, Phi-3/Zephyr, Llama 2/Mistral).
_USER_TURN = (
    re.compile(r"<\|im_start\|>user\s*(.*?)(?:<\|im_end\|>|$)", re.S),
    re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\s*(.*?)(?:<\|eot_id\|>|$)", re.S),
    re.compile(r"<start_of_turn>user\s*(.*?)(?:<end_of_turn>|$)", re.S),
    re.compile(r"<\|user\|>\s*(.*?)(?:<\|end\|>|</s>|<\|assistant\|>|$)", re.S),
    re.compile(r"\[INST\]\s*(.*?)\s*\[/INST\]", re.S),
)
_MARKERS = re.compile(r"<\|[^|<>\s]{1,40}\|>|</?s>|<(?:start|end)_of_turn>|<eos>|<bos>")


def prompt_display_text(prompt: str) -> str:
    """What a person reads as the prompt: the last user turn when ``prompt`` is a chat template
    of a known family, else the prompt without special-token markers; whitespace collapsed."""
    for pattern in _USER_TURN:
        turns = pattern.findall(prompt)
        if turns:
            return " ".join(turns[-1].split())
    return " ".join(_MARKERS.sub(" ", prompt).split())


def answer_display_text(text: str) -> str:
    """The generated text with special-token markers (``<|im_end|>``, ``</s>``, ...) removed."""
    return " ".join(_MARKERS.sub(" ", text).split())


def _shorten(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _correct_column(labels: Any, n: int) -> list[bool | None]:
    """labels -> one of True (correct) / False (incorrect) / None (ungraded) per prompt."""
    import pandas as pd

    if isinstance(labels, (str, bytes)) or not hasattr(labels, "__len__"):
        raise TypeError(f"labels must be a sequence of booleans (True = correct), one per prompt; got {type(labels).__name__}")
    arr = np.asarray(list(labels), dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {arr.shape}")
    if arr.size != n:
        raise ValueError(f"labels has {arr.size} entries but the TraceSet has {n} prompts; pass one label per prompt")
    missing = pd.isna(arr)
    given = arr[~missing]
    kind = pd.api.types.infer_dtype(given, skipna=False)
    if kind not in ("boolean", "integer", "floating", "mixed-integer-float", "empty"):
        raise TypeError(f"labels must be booleans (True = correct) or 0/1, with None for ungraded; got {kind} values")
    num = given.astype(np.float64)
    if not np.isin(num, (0.0, 1.0)).all():
        raise ValueError("labels must be True/False or 1/0 (1 = the answer is correct), with None/NaN for ungraded")
    out = np.full(n, None, dtype=object)
    out[~missing] = num == 1.0
    return out.tolist()


def _model_name(ts: "TraceSet") -> str:
    return str(ts[0].meta.get("model_name", "")) if len(ts) else ""


def dataset_risks(ts: "TraceSet", risk_model: "RiskModel", features: "pd.DataFrame | None" = None) -> np.ndarray:
    """``risk_model``'s risk for every prompt of ``ts`` (float64 [N]); NaN for a prompt it cannot
    score (a trace without generated steps, or features undefined without prompt telemetry) and
    for a prompt whose features lie outside the range a fitted model was calibrated on (its
    number would be an extrapolation).

    Equals ``risk_model.predict_proba(ts)`` wherever that is defined and calibrated.
    """
    return _scored(ts, risk_model, features)[0]


def _scored(ts: "TraceSet", risk_model: "RiskModel", features: "pd.DataFrame | None" = None) -> tuple[np.ndarray, np.ndarray]:
    """(:func:`dataset_risks`, withheld): the risks, and bool [N] for the prompts whose risk is
    not shown because their features lie outside the calibrated range (the table says so)."""
    n = len(ts)
    out = np.full(n, np.nan)
    withheld = np.zeros(n, dtype=bool)
    if n == 0:
        return out, withheld
    if risk_model.kind == "heuristic":  # needs each trace's health flags: load them one by one
        for i, trace in enumerate(ts):
            try:
                out[i] = risk_model.predict_proba(trace)
            except ValueError:
                pass
        return out, withheld
    feats = ts.to_pandas() if features is None else features
    missing = [c for c in risk_model.feature_names if c not in feats.columns]
    if missing:
        raise ValueError(f"the risk model needs features {missing} that these traces lack "
                         "(logit-lens features need analyze(..., logit_lens=True))")
    ok = np.isfinite(feats[risk_model.feature_names].to_numpy(dtype=np.float64)).all(axis=1)
    if ok.any():
        rows = feats if ok.all() else feats.loc[ok]
        value = risk_model.predict_proba(rows)
        outside = risk_model.outside_mask(rows).any(axis=1)
        value[outside] = np.nan  # never print an extrapolated probability
        out[ok] = value
        withheld[ok] = outside
    return out, withheld


#: rows of the table in the static face
FACE_ROWS = 30


class DatasetView(TraceWidget):
    """A table of the prompts of a TraceSet (prompt, answer, correct/incorrect, risk, verdict,
    steps, mean entropy), sortable by a click on a column header and filterable (text, correct /
    incorrect, verdict, minimum risk); a click on a row opens that trace's dashboard below the table.

    Args:
        data: a :class:`~corevital_widgets.TraceSet`, or a pandas DataFrame with one row per
            prompt in the TraceSet's order (then pass ``traceset=``). Columns it may hold:
            ``question`` (shown instead of the prompt), ``expected`` (the gold answer),
            ``correct`` (bool, None = ungraded); e.g. ``ts.to_pandas()`` with columns added.
        labels: True/1 where the answer is correct (what :func:`corevital_widgets.grade`
            returns), False/0 where it is wrong, None for ungraded; one per prompt. Overrides
            a ``correct`` column.
        traceset: the TraceSet whose traces the rows open (only with a DataFrame ``data``).
        risk_model: the :class:`~corevital_widgets.RiskModel` giving the risk column and the
            badge's risk; default ``RiskModel.load_default`` for the traces' model (shipped
            coefficients for SmolLM2, else the uncalibrated heuristic, with its warning).
        tokenizer: decodes top-k alternatives and logit-lens tokens in the dashboard's hover.
        row: a row to open at once.

    Traits: ``rows`` (the table, JSON, column by column), ``row`` (the clicked row, None before a click),
    ``loaded_row`` (the row whose trace the dashboard shows), ``table`` (sort and filter state),
    ``status`` (an error loading a trace, else ""); and every Dashboard trait (``selection``...).
    """

    view = traitlets.Unicode("dataset").tag(sync=True)
    rows = traitlets.Dict().tag(sync=True)
    columns = traitlets.Dict().tag(sync=True)
    row = traitlets.Int(None, allow_none=True).tag(sync=True)
    loaded_row = traitlets.Int(None, allow_none=True).tag(sync=True)
    table = traitlets.Dict().tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)

    _needs_edges = True

    def __init__(self, data: "TraceSet | pd.DataFrame", labels: Sequence[Any] | None = None, *,
                 traceset: "TraceSet | None" = None, risk_model: "RiskModel | None" = None, tokenizer: Any = None,
                 row: int | None = None, **kwargs: Any) -> None:
        import pandas as pd

        from ..batch import TraceSet
        from ..analysis.risk import RiskModel

        if isinstance(data, TraceSet):
            if traceset is not None and traceset is not data:
                raise ValueError("pass the TraceSet once: DatasetView(traceset) or DatasetView(frame, traceset=traceset)")
            ts, extra = data, None
        elif isinstance(data, pd.DataFrame):
            if not isinstance(traceset, TraceSet):
                raise TypeError("DatasetView(frame) needs traceset=<the TraceSet the rows came from> to open their traces, "
                                f"got traceset={type(traceset).__name__}")
            if len(data) != len(traceset):
                raise ValueError(f"the DataFrame has {len(data)} rows but the TraceSet has {len(traceset)} prompts; "
                                 "pass one row per prompt, in the TraceSet's order")
            ts, extra = traceset, data.reset_index(drop=True)
        else:
            raise TypeError(f"DatasetView needs a TraceSet (from corevital.analyze_many) or a pandas DataFrame, "
                            f"got {type(data).__name__}")
        if risk_model is not None and not isinstance(risk_model, RiskModel):
            raise TypeError(f"risk_model must be a corevital.RiskModel, got {type(risk_model).__name__}")
        n = len(ts)
        if labels is not None:
            correct = _correct_column(labels, n)
        elif extra is not None and "correct" in extra.columns:
            correct = _correct_column(extra["correct"].tolist(), n)
        else:
            correct = [None] * n
        if risk_model is None and n:
            first = ts[0]
            risk_model = RiskModel.load_default(first if first.meta.get("model_fingerprint") else _model_name(ts))
        super().__init__(None, tokenizer=tokenizer, risk_model=risk_model, **kwargs)
        self._traceset = ts
        self._tokenizer = tokenizer
        self._frame = self._build_frame(ts, extra, correct)
        self.columns = {
            "risk_kind": None if risk_model is None else risk_model.kind,
            "risk_label": None if risk_model is None else risk_kind_label(risk_model.kind),
            "graded": any(c is not None for c in correct),
            "has_expected": bool(self._frame["expected"].notna().any()),
            "n": n,
        }
        self.rows = self._rows_json(self._frame)
        self.table = dict(DEFAULT_TABLE)
        self.observe(self._handle_row, names="row")
        if row is not None:
            self.row = row

    # ------------------------------------------------------------------ public API
    @property
    def traceset(self) -> "TraceSet":
        """The TraceSet the rows belong to."""
        return self._traceset

    @property
    def risks(self) -> np.ndarray:
        """The risk column (float64 [N], NaN where the model cannot score a prompt)."""
        return self._frame["risk"].to_numpy(dtype=np.float64)

    def to_pandas(self) -> "pd.DataFrame":
        """The table as a DataFrame with full texts: index, prompt (the full prompt), question
        (what the table shows), answer, expected, correct, risk, verdict, tokens, entropy."""
        return self._frame.copy()

    def select_row(self, index: int) -> "Trace | None":
        """Open row ``index`` (like a click): its trace is loaded into the dashboard below and returned."""
        if self.row == index and self.loaded_row != index:  # retry after a failed load
            self._handle_row({"new": index})
        self.row = index
        return self.trace

    def sort_by(self, column: str, descending: bool = False) -> None:
        """Sort the table by ``column`` (one of :data:`COLUMNS`)."""
        if column not in COLUMNS:
            raise ValueError(f"unknown column {column!r}; expected one of {list(COLUMNS)}")
        self.table = {**self.table, "sort": column, "desc": bool(descending)}

    def filter(self, query: str | None = None, *, correct: str | None = None, verdict: str | None = None,
               min_risk: float | None = None) -> None:
        """Filter the rows shown: ``query`` (case-insensitive text in the prompt, answer or expected
        answer), ``correct`` ("all", "correct", "incorrect", "ungraded"), ``verdict`` ("all",
        "green", "yellow", "red"), ``min_risk`` (keep risk >= this, in [0, 1]). None leaves a filter as it is."""
        t = dict(self.table)
        if query is not None:
            if not isinstance(query, str):
                raise TypeError(f"query must be a str, got {type(query).__name__}")
            t["query"] = query
        if correct is not None:
            if correct not in CORRECT_FILTERS:
                raise ValueError(f"correct must be one of {list(CORRECT_FILTERS)}, got {correct!r}")
            t["correct"] = correct
        if verdict is not None:
            if verdict not in VERDICT_FILTERS:
                raise ValueError(f"verdict must be one of {list(VERDICT_FILTERS)}, got {verdict!r}")
            t["verdict"] = verdict
        if min_risk is not None:
            if not 0.0 <= float(min_risk) <= 1.0:
                raise ValueError(f"min_risk must lie in [0, 1], got {min_risk}")
            t["min_risk"] = float(min_risk)
        self.table = t

    # ------------------------------------------------------------------ internals
    def _build_frame(self, ts: "TraceSet", extra: "pd.DataFrame | None", correct: list[bool | None]) -> "pd.DataFrame":
        import pandas as pd

        summ = ts.to_pandas()
        n = len(ts)
        if n == 0:
            return pd.DataFrame({c: [] for c in ("prompt", "question", "answer", "expected", "correct", "risk", "risk_withheld",
                                                 "verdict", "tokens", "entropy")}).rename_axis("index")
        risk, withheld = _scored(ts, self.risk_model, summ)

        def col(name: str, default: Any) -> list[Any]:
            if extra is not None and name in extra.columns:
                return extra[name].tolist()
            return default

        questions = col("question", [prompt_display_text(p) for p in ts.prompts])
        expected = [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in col("expected", [None] * n)]
        frame = pd.DataFrame({
            "prompt": list(ts.prompts),
            "question": [str(q) for q in questions],
            "answer": summ["text"].astype(str).tolist(),
            "expected": expected,
            "correct": pd.array(correct, dtype="boolean"),
            "risk": risk,
            "risk_withheld": withheld,
            "verdict": summ["verdict"].astype(str).tolist(),
            "tokens": summ["n_steps"].to_numpy(dtype=np.int64) if "n_steps" in summ else np.zeros(n, np.int64),
            "entropy": summ["entropy_mean"].to_numpy(dtype=np.float64) if "entropy_mean" in summ else np.full(n, np.nan),
        }, index=pd.RangeIndex(n, name="index"))
        return frame

    @staticmethod
    def _rows_json(frame: "pd.DataFrame") -> dict[str, list[Any]]:
        """The table for the browser, column by column (row i of every list is prompt i):
        shortened texts, None for a missing number or label."""

        def nullable(values: np.ndarray) -> list[Any]:
            return np.where(np.isfinite(values), values, None).tolist()

        return {
            "prompt": [_shorten(q, PROMPT_CHARS) for q in frame["question"]],
            "answer": [_shorten(answer_display_text(a), ANSWER_CHARS) for a in frame["answer"]],
            "expected": [None if e is None else _shorten(e, ANSWER_CHARS) for e in frame["expected"]],
            "correct": frame["correct"].astype(object).where(frame["correct"].notna(), None).tolist(),
            "risk": nullable(frame["risk"].to_numpy(dtype=np.float64)),
            "risk_withheld": frame["risk_withheld"].astype(bool).tolist(),
            "verdict": frame["verdict"].tolist(),
            "tokens": frame["tokens"].to_numpy(dtype=np.int64).tolist(),
            "entropy": nullable(frame["entropy"].to_numpy(dtype=np.float64)),
        }

    @traitlets.validate("row")
    def _valid_row(self, proposal: Any) -> int | None:
        v = proposal["value"]
        if v is None:
            return None
        n = len(self._traceset)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) < n:
            raise traitlets.TraitError(f"row must be an int in 0..{n - 1}, got {v!r}")
        return int(v)

    def _handle_row(self, change: dict[str, Any]) -> None:
        i = change["new"]
        if i is None or i == self.loaded_row:
            return
        try:
            trace = self._traceset[i]
        except Exception as exc:  # a damaged or deleted trace file: say so in the view, keep the last trace
            traceback.print_exc(file=sys.stderr)
            self.status = f"could not load the trace of row {i}: {exc}"
            return
        self.status = ""
        self.set_trace(trace, tokenizer=self._tokenizer)
        self.loaded_row = i

    def __repr__(self) -> str:
        return f"<DatasetView of {len(self._traceset)} prompts, row={self.row}>"

    def face_svg(self) -> str | None:
        return None  # the table's face is HTML (:meth:`face_bundle`), not a picture of one trace

    def face_bundle(self) -> dict[str, str]:
        """The static face: the counts (:meth:`text_face`) and the first rows of the table."""
        from .static_face import face_bundle

        f = self._frame
        cols = [c for c in ("question", "answer", "expected", "correct", "verdict", "risk") if c in f.columns]
        rows = f[cols].head(FACE_ROWS).copy()
        for c in ("question", "answer", "expected"):
            if c in rows:
                rows[c] = rows[c].map(lambda v: _shorten(answer_display_text(v), PROMPT_CHARS))
        table = rows.to_html(float_format=lambda v: f"{v:.2f}", na_rep="n/s", border=0)
        more = f"<div>… and {len(f) - FACE_ROWS} more rows</div>" if len(f) > FACE_ROWS else ""
        return face_bundle(None, self.face_id, self.text_face(),
                           "Static copy of the table as saved; where widgets run, the live view below replaces it.",
                           extra_html=table + more)

    def text_face(self) -> str:
        """The table in a few plain lines (what viewers without widgets show): counts of correct,
        wrong and ungraded answers, of each verdict, and the riskiest shown prompt."""
        f = self._frame
        n = len(f)
        correct = f["correct"]
        verdicts = f["verdict"].value_counts()
        lines = [f"corevital dataset view: {n} prompts; {int((correct == True).sum())} correct, "  # noqa: E712
                 f"{int((correct == False).sum())} wrong, {int(correct.isna().sum())} ungraded; verdicts "  # noqa: E712
                 + ", ".join(f"{c} {int(verdicts.get(c, 0))}" for c in ("green", "yellow", "red"))]
        risks = f["risk"].to_numpy(dtype=np.float64)
        if n and np.isfinite(risks).any():
            i = int(np.nanargmax(risks))
            lines.append(f"riskiest: row {i} ({risks[i]:.2f}): {_shorten(f['question'].iloc[i], PROMPT_CHARS)!r} -> "
                         f"{_shorten(answer_display_text(f['answer'].iloc[i]), ANSWER_CHARS)!r}")
        lines.append("(interactive table: run the cell with a kernel)")
        return "\n".join(lines)
