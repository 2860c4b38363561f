"""``ray_analyze_many``: ``analyze_many`` over every GPU of a host or a Ray cluster (the optional
extra ``corevital-widgets[ray]``).

The driver reads the prompts, names each prompt's trace file exactly as ``analyze_many`` does
(``prompt_key``: index, text, model name, analyze keyword arguments), and leaves out every prompt
whose file is already in ``out_dir`` (and loads). Ray Data sends the rest to a pool of actors —
one per GPU, or CPU actors on a laptop — each of which calls the user's ``loader`` once, traces
its batches and saves every trace atomically to ``out_dir`` as soon as it is made (two calls
per actor at once: one batch on the device while the previous one's files are built and saved).
Each actor also skips files that appeared meanwhile, so a retried task (an actor that died and was
restarted) never traces a prompt twice. The driver collects the summaries, writes the manifest
and returns a :class:`~corevital_widgets.TraceSet` (``TraceSet.load(out_dir)`` works too). A run
that is killed or fails loses at most the batches in flight; running it again — or
``analyze_many(model, prompts, out_dir=...)`` with the same model name and keyword arguments —
resumes.

Why the driver reads the prompts (not ``ray.data.read_json``): it needs every prompt anyway, for
the keys, the resume check, the manifest and the returned TraceSet, and a malformed JSONL line
must be reported with its line number. Ray Data carries only the pending rows to the actors.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import time
import warnings
from os import PathLike
from pathlib import Path
from typing import Any, Callable

from .batch import (
    TRACE_SUFFIX,
    TracePools,
    TraceSet,
    _check_prompts,
    _model_name,
    prompt_key,
    resume_summaries,
    trace_summary_row,
    write_manifest,
)
from .model_dir import ModelDirLoader
from .prompt_files import read_prompts
from .trace.storage import ZSTD_LEVEL_DATASET

#: seconds between manifest writes while results stream in (the trace files are the truth).
MANIFEST_INTERVAL_S = 5.0
#: calls each actor runs at once: one traces its block on the device (on the actor's device thread)
#: while the other builds and saves the previous block's files, as analyze_many's loop overlaps
#: them (one block is one batch, so without this every batch's saving would stall the GPU).
CALLS_PER_ACTOR = 2
_RESERVED = {"prompt", "prompts", "tokenizer", "out_dir", "progress"}


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"ray_analyze_many needs Ray Data ({err}); install the extra: pip install 'corevital-widgets[ray]'"
        ) from None
    return ray


def _resolve_loader(loader: Any, model_name: str | None) -> tuple[Callable[[], tuple[Any, Any]], str]:
    if isinstance(loader, (str, PathLike)):
        loader = ModelDirLoader(os.fspath(loader))
    if not callable(loader):
        raise TypeError(
            f"loader must be a zero-argument callable returning (model, tokenizer), or a local model folder; "
            f"got {type(loader).__name__}"
        )
    if model_name is None:
        model_name = getattr(loader, "model_name", None)
    if not isinstance(model_name, str) or not model_name:
        raise TypeError(
            "pass model_name=... (the name in the trace file names; analyze_many uses the model's "
            "config.name_or_path, e.g. the folder it was loaded from) or give the loader a model_name "
            "attribute (corevital_widgets.model_dir.ModelDirLoader has one)"
        )
    return loader, model_name


class _TraceWorker:
    """One Ray actor: loads the model once, then traces and saves batches of prompts."""

    def __init__(self, loader: Callable[[], tuple[Any, Any]], out_dir: str, batch_size: int,
                 analyze_kwargs: dict[str, Any]) -> None:
        from .engine.loading import resolve_model, resolve_tokenizer

        model, tokenizer = loader()
        self.model = resolve_model(model)
        self.tokenizer = resolve_tokenizer(self.model, tokenizer)
        self.name = _model_name(self.model)
        self.out = Path(out_dir)
        self.batch_size = batch_size
        self.analyze_kwargs = analyze_kwargs
        #: threads shared by all calls: Ray runs two calls of this actor at once (CALLS_PER_ACTOR),
        #: so one batch generates while the previous call's traces are built and saved. Every
        #: call's device work runs on the pools' one device thread (serialised as under a lock,
        #: and torch's per-thread caches, cuDNN's attention plans among them, stay whole)
        self._pools = TracePools(device_thread=True)

    def _saved_summary(self, path: Path) -> dict[str, Any] | None:
        from .trace.storage import TraceFileError, load_trace

        if not path.is_file():
            return None
        try:
            return trace_summary_row(load_trace(path))
        except TraceFileError:
            path.unlink(missing_ok=True)
            return None

    def __call__(self, batch: Any) -> Any:
        import pandas as pd
        from tqdm.auto import tqdm

        from .batch import _trace_batched
        from .engine.analyze import analyze

        indices, prompts, keys = list(batch["index"]), list(batch["prompt"]), list(batch["key"])
        paths = [self.out / f"{k}{TRACE_SUFFIX}" for k in keys]
        summaries = [self._saved_summary(p) for p in paths]  # a retried task skips what it saved before
        traced = [False] * len(keys)
        todo = [j for j, s in enumerate(summaries) if s is None]
        if self.batch_size > 1 and len(todo) > 1:
            # analyze_many's batched loop: files saved on threads, all on disk when it returns
            _trace_batched(self.model, self.tokenizer, prompts, keys, summaries, self.out, self.batch_size,
                           self.analyze_kwargs, lambda: None, tqdm(disable=True), pools=self._pools,
                           spread_last=False)
            for j in todo:
                traced[j] = True
        else:
            for j in todo:
                trace = self._pools.on_device(
                    lambda j=j: analyze(self.model, prompts[j], self.tokenizer, **self.analyze_kwargs))
                trace.save(paths[j], ZSTD_LEVEL_DATASET)  # atomic: temp file + rename
                summaries[j], traced[j] = trace_summary_row(trace), True
        return pd.DataFrame({
            "index": [int(i) for i in indices],
            "summary": [json.dumps(s, allow_nan=True) for s in summaries],
            "traced": traced,
            "model_name": [self.name] * len(keys),
        })


def _plan_resources(ray: Any, n_blocks: int, num_workers: int | None,
                    num_gpus_per_worker: float | None) -> tuple[int, float, float]:
    """(workers, GPUs per worker, CPUs per worker): one worker per GPU when the cluster has GPUs,
    else CPU workers sharing the cores; never more workers than there are batches."""
    total = ray.cluster_resources()
    gpus, cpus = float(total.get("GPU", 0)), float(total.get("CPU", 1))
    node_cpus = max((float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=cpus)
    if num_gpus_per_worker is None:
        num_gpus_per_worker = 1.0 if gpus >= 1 else 0.0
    if num_gpus_per_worker < 0:
        raise ValueError(f"num_gpus_per_worker must be >= 0, got {num_gpus_per_worker}")
    if num_gpus_per_worker > 0:
        if gpus < num_gpus_per_worker:
            raise ValueError(f"num_gpus_per_worker={num_gpus_per_worker} but the Ray cluster has {gpus:g} GPUs")
        workers = num_workers if num_workers is not None else int(gpus // num_gpus_per_worker)
        # a replica builds and saves its traces on a builder and saver threads beside the thread
        # that launches its GPU work: it gets its GPU's share of its node's cores (one core left to
        # Ray and the driver), and Ray sizes the actor's thread pools (OMP_NUM_THREADS) to it
        shares = [(float(n["Resources"].get("CPU", 0)) - 1) / float(n["Resources"]["GPU"])
                  for n in ray.nodes() if n.get("Alive") and float(n["Resources"].get("GPU", 0)) > 0]
        cpus_each = float(max(1, int(min(shares, default=1.0) * num_gpus_per_worker)))
    else:
        workers = num_workers if num_workers is not None else max(1, min(4, int(cpus) // 2))
        cpus_each = float(max(1, min(int(node_cpus), int(cpus) // max(1, workers))))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"num_workers must be a positive int, got {workers!r}")
    return min(workers, n_blocks), float(num_gpus_per_worker), cpus_each


def _actor_pool(ray: Any, workers: int) -> tuple[Any, dict[str, Any]]:
    """A fixed pool of ``workers`` actors running CALLS_PER_ACTOR calls each at once, in threads,
    and the remote arguments ``map_batches`` needs for it (Ray Data releases differ in how this
    is asked for: the actor's ``max_concurrency`` where the strategy has no argument for it)."""
    params = inspect.signature(ray.data.ActorPoolStrategy).parameters
    remote_args: dict[str, Any] = {}
    kw: dict[str, Any] = {"size": workers, "max_tasks_in_flight_per_actor": CALLS_PER_ACTOR}
    if "enable_true_multi_threading" in params:  # otherwise a later call only prefetches its input
        kw["enable_true_multi_threading"] = True
    if "max_concurrent_calls_per_actor" in params:
        kw["max_concurrent_calls_per_actor"] = CALLS_PER_ACTOR
    else:
        remote_args["max_concurrency"] = CALLS_PER_ACTOR
    return ray.data.ActorPoolStrategy(**kw), remote_args


def _local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def ray_analyze_many(
    loader: Callable[[], tuple[Any, Any]] | str | PathLike[str],
    prompts: Any,
    out_dir: str | PathLike[str],
    *,
    model_name: str | None = None,
    address: str | None = None,
    num_workers: int | None = None,
    num_gpus_per_worker: float | None = None,
    batch_size: int = 1,
    progress: bool = True,
    **analyze_kwargs: Any,
) -> TraceSet:
    """Trace many prompts on a Ray cluster (or a local Ray on this machine) into ``out_dir``.

    Args:
        loader: a picklable zero-argument callable returning ``(model, tokenizer)``, called once
            per worker (put the model on ``"cuda"``: each GPU worker sees only its own GPU); or a
            local Hugging Face model folder (loaded offline by
            :class:`~corevital_widgets.model_dir.ModelDirLoader`).
        prompts: a list of strings, a pandas DataFrame with a ``prompt`` column, or the path (or
            fsspec URL) of a JSONL file (``{"prompt": ...}`` per line) or a Parquet file.
        out_dir: a folder the driver and every worker can write (on a cluster: a shared
            filesystem). Trace files are named as by ``analyze_many`` for the same model name and
            keyword arguments, so each resumes the other's runs.
        model_name: the model name in the file keys. Default: ``loader.model_name`` (a folder
            loader's folder, which is what ``analyze_many`` uses for a model loaded from it:
            ``config.name_or_path``). Required for loaders without that attribute.
        address: where to run when this process has not joined a Ray yet (one it has joined,
            e.g. with your own ``ray.init(...)``, is used as it is and left running): ``None`` or
            ``"local"`` starts a local Ray (all cores, no dashboard) that is shut down at the end;
            otherwise the cluster to connect to (``"auto"``, ``"ray://head:10001"``, ``"10.0.0.1:6379"``).
        num_workers: model replicas. Default: one per GPU of the cluster, each with its GPU's
            share of its node's cores but one (it builds and saves traces on threads; Ray sizes
            its thread pools to that share); without GPUs, half the CPUs (1 to 4 workers), each
            with an equal share of the cores.
        num_gpus_per_worker: default 1 when the cluster has GPUs, else 0 (CPU workers);
            fractions pack several replicas on one GPU.
        batch_size: prompts per ``generate`` call (``analyze_many(..., batch_size=N)`` inside each
            worker); 1 traces prompt by prompt, each saved as soon as it is done.
        progress: a tqdm bar on the driver (prompts done, including those done before).
        **analyze_kwargs: passed to ``analyze`` for every prompt (``max_new_tokens``, ``seed``...).
    """
    ray = _import_ray()
    from tqdm.auto import tqdm

    loader, model_name = _resolve_loader(loader, model_name)
    bad = sorted(_RESERVED & set(analyze_kwargs))
    if bad:
        raise TypeError(f"{bad[0]}= is not an analyze keyword here: pass the prompts as `prompts` and the folder as `out_dir`")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    prompts = _check_prompts(read_prompts(prompts))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out_dir {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)

    keys = [prompt_key(i, p, model_name, analyze_kwargs) for i, p in enumerate(prompts)]
    summaries = resume_summaries(out, keys)
    write_manifest(out, model_name, analyze_kwargs, prompts, keys, summaries)
    pending = [i for i, s in enumerate(summaries) if s is None]
    result = TraceSet(prompts=prompts, keys=keys, summaries=summaries, out_dir=out)  # type: ignore[arg-type]
    if not pending:
        return result

    started = False
    if not ray.is_initialized():
        if address in (None, "local"):
            ray.init(num_cpus=_local_cpus(), include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=True)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        started = True

    ctx = ray.data.DataContext.get_current()
    quiet = {"enable_progress_bars": False, "print_on_execution_start": False}  # our bar replaces Ray Data's
    saved_ctx = {k: getattr(ctx, k) for k in quiet if hasattr(ctx, k)}
    loggers = {name: logging.getLogger(name) for name in ("ray.data", "ray.data._internal.progress")}
    saved_levels = {name: lg.level for name, lg in loggers.items()}
    per_block = batch_size
    n_blocks = math.ceil(len(pending) / per_block)
    bar = tqdm(total=len(prompts), initial=len(prompts) - len(pending), disable=not progress,
               desc="ray_analyze_many", unit="prompt")
    names_seen: set[str] = set()
    last_write = time.monotonic()
    try:
        for k in saved_ctx:
            setattr(ctx, k, quiet[k])
        loggers["ray.data"].setLevel(logging.WARNING)  # keep warnings such as unschedulable workers
        loggers["ray.data._internal.progress"].setLevel(logging.ERROR)  # not "progress bars disabled"
        workers, gpus_each, cpus_each = _plan_resources(ray, n_blocks, num_workers, num_gpus_per_worker)
        pool, remote_args = _actor_pool(ray, workers)
        # similar lengths together (characters stand for tokens here): less padding in each batch;
        # longest first, and at most CALLS_PER_ACTOR blocks per actor at a time: an actor that
        # finishes takes the next block, so the run ends with short blocks on every actor
        rows = [{"index": i, "prompt": prompts[i], "key": keys[i]}
                for i in sorted(pending, key=lambda i: (-len(prompts[i]), i))]
        ds = ray.data.from_items(rows, override_num_blocks=n_blocks).map_batches(
            _TraceWorker,
            fn_constructor_kwargs={"loader": loader, "out_dir": str(out.resolve()), "batch_size": batch_size,
                                   "analyze_kwargs": analyze_kwargs},
            batch_size=per_block, batch_format="pandas",
            compute=pool,
            num_gpus=gpus_each, num_cpus=cpus_each, **remote_args,
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            for index, summary, name in zip(batch["index"], batch["summary"], batch["model_name"]):
                summaries[int(index)] = json.loads(summary)
                names_seen.add(str(name))
                bar.update(1)
            if time.monotonic() - last_write > MANIFEST_INTERVAL_S:
                write_manifest(out, model_name, analyze_kwargs, prompts, keys, summaries)
                last_write = time.monotonic()
    finally:
        bar.close()
        write_manifest(out, model_name, analyze_kwargs, prompts, keys, summaries)
        for k, v in saved_ctx.items():
            setattr(ctx, k, v)
        for name, level in saved_levels.items():
            loggers[name].setLevel(level)
        if started:
            ray.shutdown()
    other = names_seen - {model_name}
    if other:
        warnings.warn(
            f"the trace files are keyed by model_name={model_name!r} but the loaded model calls itself "
            f"{sorted(other)[0]!r}; analyze_many on that model object would use other file names",
            stacklevel=2,
        )
    missing = [i for i, s in enumerate(summaries) if s is None]
    if missing:  # pragma: no cover - Ray raises first when a batch fails
        raise RuntimeError(f"{len(missing)} prompts were not traced (first: {missing[0]}); run again to resume")
    return result
