"""``analyze_many``: trace many prompts, resumably, into a :class:`TraceSet`.

With ``out_dir`` every trace is saved (atomically) as soon as it completes, under a name that
is a pure function of the prompt's index, its text, the model name and the analyze keyword
arguments: ``{index:05d}-{sha256[:16]}.cvtrace``. A small ``manifest.json`` (written
atomically after each trace) caches the per-prompt summaries. The trace files are the source
of truth: a re-run skips every prompt whose file exists and loads, so a crash loses at most
the prompt in flight (with ``batch_size`` N: the batch generating and the one being saved) and
never traces a prompt twice. Only summaries stay in memory; traces are
loaded from disk on access.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeVar

import numpy as np

from .analysis.features import trace_features
from .trace.storage import ZSTD_LEVEL_DATASET, TraceFileError, load_trace, write_text_atomic

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .analysis.baseline import Baseline
    from .trace.trace import Trace

T = TypeVar("T")

MANIFEST_NAME = "manifest.json"
#: Threads that compress and write a batched run's trace files while the next batch runs.
SAVER_THREADS = 8
MANIFEST_VERSION = 1
TRACE_SUFFIX = ".cvtrace"
#: analyze keyword arguments that do not change the trace and so are left out of the file key.
_UNKEYED = frozenset({"on_step", "progress", "on_prompt_layer"})


def _model_name(model: Any) -> str:
    if isinstance(model, (str, PathLike)):
        return str(model)
    config = getattr(model, "config", None)
    return str(getattr(config, "name_or_path", "") or getattr(model, "name_or_path", "") or type(model).__name__)


def prompt_key(index: int, prompt: str, model_name: str, analyze_kwargs: dict[str, Any]) -> str:
    """The deterministic file stem of one prompt: ``{index:05d}-{sha256 hex[:16]}``.

    The hash covers the prompt text, the model name and the analyze keyword arguments that
    shape the trace (``on_step``/``progress`` excluded), so changing any of them re-traces.
    """
    kw = {k: v for k, v in analyze_kwargs.items() if k not in _UNKEYED}
    blob = json.dumps({"prompt": prompt, "model": model_name, "kwargs": kw}, sort_keys=True, default=repr)
    return f"{index:05d}-{hashlib.sha256(blob.encode('utf-8')).hexdigest()[:16]}"


_write_text_atomic = write_text_atomic  # the one atomic text writer lives in trace/storage.py


def _write_json_atomic(path: Path, obj: Any) -> None:
    _write_text_atomic(path, json.dumps(obj, allow_nan=True))


def trace_summary_row(trace: "Trace") -> dict[str, Any]:
    """What a TraceSet keeps in memory per prompt: generated text, verdict and features."""
    from .analysis.verdict import assess

    row: dict[str, Any] = {"text": trace.text, "verdict": assess(trace).color}  # vs the model's normal, when known
    row.update(trace_features(trace))
    return row


@dataclass
class TraceSet:
    """Traces of many prompts: summaries in memory, traces on disk (or in memory without ``out_dir``).

    ``len(ts)``, ``ts[i]`` (a :class:`~corevital_widgets.Trace`, loaded from disk when saved),
    iteration over traces, ``ts.to_pandas()`` (one row per prompt), ``TraceSet.load(out_dir)``.
    """

    prompts: list[str]
    keys: list[str]
    summaries: list[dict[str, Any]]
    out_dir: Path | None = None
    _traces: list["Trace"] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def paths(self) -> list[Path]:
        """The trace file of every prompt (empty when the set was made without ``out_dir``)."""
        return [] if self.out_dir is None else [self.out_dir / f"{k}{TRACE_SUFFIX}" for k in self.keys]

    def __getitem__(self, i: int) -> "Trace":
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index a TraceSet with an int, got {type(i).__name__}")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a TraceSet of {n} prompts")
        if self._traces is not None:
            return self._traces[i]
        return load_trace(self.paths[i])

    def __iter__(self) -> Iterator["Trace"]:
        for i in range(len(self)):
            yield self[i]

    def features(self) -> "pd.DataFrame":
        """The feature columns only (one row per prompt), as used by ``RiskModel``."""
        from .analysis.features import FEATURE_NAMES, LENS_FEATURE_NAMES

        df = self.to_pandas()
        cols = [c for c in (*FEATURE_NAMES, *LENS_FEATURE_NAMES) if c in df.columns]
        return df[cols]

    def to_pandas(self) -> "pd.DataFrame":
        """One row per prompt: index, prompt, key, generated text, verdict and every feature."""
        import pandas as pd

        rows = [{"index": i, "prompt": p, "key": k, **s} for i, (p, k, s) in enumerate(zip(self.prompts, self.keys, self.summaries))]
        return pd.DataFrame(rows).set_index("index") if rows else pd.DataFrame(columns=["prompt", "key", "text", "verdict"])

    def chart(self, x: str = "entropy_mean", y: str = "max_prob_mean", color: str = "verdict",
              labels: Sequence[Any] | None = None) -> Any:
        """A static dataset view: one point per prompt, ``x`` against ``y`` (feature names, see
        ``trace.features``), coloured by ``color`` (a column, or ``"label"`` with ``labels``);
        hover shows the prompt index, generated text and verdict; drag to zoom, scroll to pan."""
        import altair as alt

        df = self.to_pandas().reset_index()
        if labels is not None:
            if len(labels) != len(df):
                raise ValueError(f"labels has {len(labels)} entries for {len(df)} prompts; pass one per prompt")
            df["label"] = list(labels)
        for name, role in ((x, "x"), (y, "y"), (color, "color")):
            if name not in df.columns:
                raise ValueError(f"{role}={name!r} is not a column; choose one of {sorted(map(str, df.columns))}")
        df = df.drop(columns=["prompt", "key"])
        return alt.Chart(df).mark_circle(size=40, opacity=0.7).encode(
            x=alt.X(f"{x}:Q"), y=alt.Y(f"{y}:Q"), color=alt.Color(f"{color}:N"),
            tooltip=["index", "text", "verdict", x, y],
        ).properties(title=f"{len(df)} prompts: {y} vs {x}", width=420, height=320).interactive()

    @classmethod
    def load(cls, out_dir: str | PathLike[str]) -> "TraceSet":
        """Open a finished ``analyze_many`` output folder from its manifest."""
        out = Path(out_dir)
        path = out / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; is {out} an analyze_many out_dir?")
        manifest = json.loads(path.read_text(encoding="utf-8"))
        entries = manifest["entries"]
        missing = [e["index"] for e in entries if e.get("summary") is None]
        if missing:
            raise ValueError(f"{len(missing)} prompts of {out} are not traced yet (first: {missing[0]}); re-run analyze_many to finish")
        return cls(prompts=[e["prompt"] for e in entries], keys=[e["key"] for e in entries],
                   summaries=[e["summary"] for e in entries], out_dir=out)

    def __repr__(self) -> str:
        where = f"on disk in {self.out_dir}" if self.out_dir is not None else "in memory"
        return f"<TraceSet of {len(self)} prompts, {where}>"


def _check_prompts(prompts: Any) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string; use analyze() for one prompt")
    try:
        prompts = list(prompts)
    except TypeError:
        raise TypeError(f"prompts must be an iterable of strings, got {type(prompts).__name__}") from None
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise TypeError(f"prompts[{bad[0]}] is a {type(prompts[bad[0]]).__name__}, not a str")
    empty = [i for i, p in enumerate(prompts) if not p.strip()]
    if empty:
        raise ValueError(f"prompts[{empty[0]}] is empty; every prompt needs some text")
    return prompts


def analyze_many(
    model: Any,
    prompts: Sequence[str],
    tokenizer: Any | None = None,
    *,
    out_dir: str | PathLike[str] | None = None,
    progress: bool = True,
    batch_size: int = 1,
    **analyze_kwargs: Any,
) -> TraceSet:
    """Run :func:`corevital_widgets.analyze` on every prompt and collect a :class:`TraceSet`.

    Args:
        model, tokenizer: as for ``analyze`` (the model is resolved and loaded once).
        prompts: the prompt strings (chat templates applied by you), in order.
        out_dir: a folder; each trace is saved there as soon as it completes and a re-run
            skips prompts already traced with the same text, model and keyword arguments.
            Without it every Trace stays in memory.
        progress: show a ``tqdm.auto`` progress bar (a widget in notebooks).
        batch_size: prompts per ``generate`` call (1: one ``analyze`` per prompt). Larger batches go
            through :func:`corevital_widgets.engine.batched.analyze_batch`: the prompts still to trace
            are sorted by length (little padding), traced N at a time, and every trace equals (float
            tolerance) the one batch size 1 gives; files, names, order and resuming are the same.
            What cannot be batched exactly is traced alone, with a warning.
        **analyze_kwargs: passed to ``analyze`` for every prompt (max_new_tokens, seed, ...).
    """
    from tqdm.auto import tqdm

    from .engine.analyze import analyze
    from .engine.loading import resolve_model, resolve_tokenizer

    prompts = _check_prompts(prompts)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if "prompt" in analyze_kwargs:
        raise TypeError("pass the prompts as the `prompts` list, not prompt=")
    model = resolve_model(model)
    tokenizer = resolve_tokenizer(model, tokenizer)
    name = _model_name(model)
    keys = [prompt_key(i, p, name, analyze_kwargs) for i, p in enumerate(prompts)]
    summaries: list[dict[str, Any] | None] = [None] * len(prompts)
    traces: list["Trace"] | None = None
    out: Path | None = None

    if out_dir is not None:
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"out_dir {out} exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        summaries = resume_summaries(out, keys)
    else:
        traces = []

    def save_manifest() -> None:
        if out is not None:
            write_manifest(out, name, analyze_kwargs, prompts, keys, summaries)

    done = sum(s is not None for s in summaries)
    save_manifest()
    bar = tqdm(total=len(prompts), initial=done, disable=not progress, desc="analyze_many", unit="prompt")
    if batch_size > 1:
        try:
            by_index = _trace_batched(model, tokenizer, prompts, keys, summaries, out, int(batch_size), analyze_kwargs,
                                      save_manifest, bar)
        finally:
            bar.close()
        if traces is not None:
            traces = [by_index[i] for i in range(len(prompts))]
        return TraceSet(prompts=prompts, keys=keys, summaries=summaries, out_dir=out, _traces=traces)  # type: ignore[arg-type]
    try:
        for i, prompt in enumerate(prompts):
            if summaries[i] is not None:
                continue
            trace = analyze(model, prompt, tokenizer, **analyze_kwargs)
            summaries[i] = trace_summary_row(trace)
            if out is not None:
                trace.save(out / f"{keys[i]}{TRACE_SUFFIX}", ZSTD_LEVEL_DATASET)
                save_manifest()
            else:
                assert traces is not None
                traces.append(trace)
            bar.update(1)
    finally:
        bar.close()
    return TraceSet(prompts=prompts, keys=keys, summaries=summaries, out_dir=out, _traces=traces)  # type: ignore[arg-type]


class TracePools:
    """The threads a batched run builds and saves its traces on: one builder (numpy copies,
    mostly free of the GIL; one, so that the thread launching the next batch's device work keeps
    the GIL most of the time) and up to SAVER_THREADS savers (zstd releases the GIL). A Ray actor
    keeps one set for all its calls; :func:`_trace_batched` makes its own otherwise.

    With ``device_thread``, every batch's device work also runs on one thread of its own
    (:meth:`on_device`), whichever thread asks: for callers whose calls arrive on several threads
    (a Ray actor runs two at once). It serialises the device work as a lock would, and it keeps
    torch's per-thread caches whole: cuDNN's attention plans are cached per thread (one plan per
    batch and key length, built on a miss at a cost of the order of 0.1-0.5 s), so device work
    spread over two threads builds each shape's plans twice."""

    def __init__(self, savers: int = SAVER_THREADS, *, device_thread: bool = False) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.saver = ThreadPoolExecutor(max(1, min(savers, os.cpu_count() or 1)), thread_name_prefix="corevital-save")
        self.builder = ThreadPoolExecutor(1, thread_name_prefix="corevital-build")
        self.device = ThreadPoolExecutor(1, thread_name_prefix="corevital-device") if device_thread else None

    def on_device(self, work: Callable[[], T]) -> T:
        """``work()`` on the device thread (waiting for it), or on this thread without one."""
        if self.device is None:
            return work()
        return self.device.submit(work).result()

    def close(self) -> None:
        """Wait for what was handed over, then stop the threads (the builder first: it hands files
        to the savers)."""
        if self.device is not None:
            self.device.shutdown(wait=True)
        self.builder.shutdown(wait=True)
        self.saver.shutdown(wait=True)

    def __enter__(self) -> "TracePools":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _trace_batched(model: Any, tokenizer: Any, prompts: list[str], keys: list[str],
                   summaries: list[dict[str, Any] | None], out: Path | None, batch_size: int,
                   analyze_kwargs: dict[str, Any], save_manifest: Any, bar: Any,
                   pools: TracePools | None = None, spread_last: bool = True) -> dict[int, "Trace"]:
    """analyze_many's batched loop: the prompts still to trace, shortest first, ``batch_size`` per
    generate call. A batch's device work runs on this thread (or the pools' device thread, below);
    its traces are then built from host memory on the builder thread and saved on the saver
    threads (``pools``; default: made here) while the next batch generates. At most one batch is
    being built and saved while the next runs; its manifest entries are written once its files are on disk (a crash before that
    re-traces them: resuming trusts files, not the manifest). With ``spread_last``, nothing runs
    after the last batch, so its traces are built on every saver thread at once. Each batch's
    device work runs through ``pools.on_device``: on this thread, or on the pools' one device
    thread for callers that run several of these loops at once (a Ray actor: one call on the
    device while the previous one builds and saves; it passes ``spread_last=False``: building on
    the saver threads would starve the device thread of the GIL). Returns the traces by prompt
    index when there is no ``out``."""
    from concurrent.futures import Future

    from .engine.batched import pending_batch

    todo = [i for i, s in enumerate(summaries) if s is None]
    length = {i: len(tokenizer(prompts[i])["input_ids"]) for i in todo}
    todo.sort(key=lambda i: (length[i], i))
    kept: dict[int, "Trace"] = {}
    with (nullcontext(pools) if pools is not None else TracePools(min(SAVER_THREADS, batch_size))) as threads:
        saver, builder = threads.saver, threads.builder

        def finish(i: int, make: Any) -> tuple["Trace", dict[str, Any], Future | None]:
            trace = make()
            summary = trace_summary_row(trace)
            saved = (saver.submit(trace.save, out / f"{keys[i]}{TRACE_SUFFIX}", ZSTD_LEVEL_DATASET)
                     if out is not None else None)
            return trace, summary, saved

        def collect(members: list[int], built: list[Future]) -> None:
            for i, future in zip(members, built):
                trace, summary, saved = future.result()
                if saved is not None:
                    saved.result()
                else:
                    kept[i] = trace
                summaries[i] = summary
            save_manifest()
            bar.update(len(members))

        in_flight: tuple[list[int], list[Future]] | None = None
        for b0 in range(0, len(todo), batch_size):
            members = todo[b0 : b0 + batch_size]
            batch = [prompts[i] for i in members]
            makers = threads.on_device(lambda: pending_batch(model, batch, tokenizer, **analyze_kwargs))
            if in_flight is not None:
                collect(*in_flight)
            # finish() hands its file to the saver pool without waiting for it: no deadlock there
            last = b0 + batch_size >= len(todo) and spread_last
            pool = saver if last else builder
            in_flight = (members, [pool.submit(finish, i, make) for i, make in zip(members, makers)])
        if in_flight is not None:
            collect(*in_flight)
    return kept


def _numeric_fault(trace: "Trace") -> bool:
    """A run whose numbers went wrong (NaN/Inf, mid-layer anomaly): not part of any normal."""
    h = trace.health
    return bool(h.nan_detected or h.inf_detected or h.mid_layer_anomaly_detected)


def fit_baseline(
    model: Any,
    tokenizer: Any | None = None,
    prompts: Sequence[str] | None = None,
    *,
    n: int = 220,
    max_new_tokens: int = 32,
    out_dir: str | PathLike[str] | None = None,
    progress: bool = True,
    description: str = "",
    **analyze_kwargs: Any,
) -> "Baseline":
    """The model's normal, in one call: trace ``prompts`` (default: the first ``n`` of the
    built-in ordinary prompts, ``corevital_widgets.analysis.ordinary_prompts.FIT_PROMPTS``, chat
    questions through the tokenizer's chat template and plain-text continuations) with
    :func:`analyze_many` and fit a :class:`~corevital_widgets.Baseline` on the runs that have no
    numeric fault (red runs are not normal). ``out_dir`` keeps the traces (a re-run resumes).
    Register the result with ``corevital.register_baseline`` or save it with ``.save(path)``."""
    from .analysis.baseline import Baseline
    from .analysis.ordinary_prompts import FIT_PROMPTS, chat_or_plain
    from .engine.loading import resolve_model, resolve_tokenizer

    model = resolve_model(model)
    tokenizer = resolve_tokenizer(model, tokenizer)
    if prompts is None:
        if not 40 <= n <= len(FIT_PROMPTS):
            raise ValueError(f"n must be between 40 and {len(FIT_PROMPTS)} (the built-in prompts), got {n}")
        prompts = [chat_or_plain(tokenizer, text, chat) for text, chat in FIT_PROMPTS[:n]]
    ts = analyze_many(model, list(prompts), tokenizer, out_dir=out_dir, progress=progress,
                      max_new_tokens=max_new_tokens, **analyze_kwargs)
    healthy = [t for t in ts if not _numeric_fault(t)]
    return Baseline.fit(healthy, description=description or f"{len(prompts)} ordinary prompts, {max_new_tokens} new tokens")


# --- out_dir helpers shared with the Ray path (distributed.py) and the command line -------------

def resume_summaries(out: Path, keys: Sequence[str]) -> list[dict[str, Any] | None]:
    """What is already traced in ``out``, as ``analyze_many`` decides it: per key the summary of a
    saved trace (from the manifest's cache, else by loading the file), ``None`` when the prompt
    still needs tracing. Removes temp files of saves killed midway and unreadable trace files."""
    for stale in out.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    cached: dict[str, dict[str, Any]] = {}
    mpath = out / MANIFEST_NAME
    if mpath.is_file():
        try:
            old = json.loads(mpath.read_text(encoding="utf-8"))
            cached = {e["key"]: e["summary"] for e in old.get("entries", []) if e.get("summary") is not None}
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            cached = {}  # the manifest is only a cache
    summaries: list[dict[str, Any] | None] = [None] * len(keys)
    for i, key in enumerate(keys):
        path = out / f"{key}{TRACE_SUFFIX}"
        if not path.is_file():
            continue
        if key in cached:
            summaries[i] = cached[key]
            continue
        try:
            summaries[i] = trace_summary_row(load_trace(path))
        except TraceFileError:
            path.unlink(missing_ok=True)
    return summaries


def write_manifest(out: Path, model_name: str, analyze_kwargs: dict[str, Any], prompts: Sequence[str],
                   keys: Sequence[str], summaries: Sequence[dict[str, Any] | None]) -> None:
    """Write ``out/manifest.json`` atomically, in ``analyze_many``'s format (``TraceSet.load`` reads it)."""
    entries = [{"index": i, "key": k, "prompt": p, "file": f"{k}{TRACE_SUFFIX}", "summary": s}
               for i, (k, p, s) in enumerate(zip(keys, prompts, summaries))]
    _write_json_atomic(out / MANIFEST_NAME, {"version": MANIFEST_VERSION, "model": model_name,
                                             "analyze_kwargs": {k: repr(v) for k, v in analyze_kwargs.items() if k not in _UNKEYED},
                                             "entries": entries})
