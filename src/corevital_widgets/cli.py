"""The ``corevital`` command: ``demo``, ``summary FILE``, ``analyze MODEL_DIR --prompt TEXT`` and
``batch MODEL_DIR prompts.jsonl --out DIR`` (a local Hugging Face model folder, loaded offline).

Errors the user can fix (a missing folder, not a model folder, a malformed prompts line, an empty
file) print one line on stderr and exit with status 2. ``batch`` saves every trace atomically as
soon as it is made: after Ctrl-C (exit status 130) or a crash, the same command resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

DEFAULT_QUESTION = "Why is the sky blue? Answer in two sentences."


class UsageError(Exception):
    """A problem the user fixes: printed as one line, exit status 2."""


def _demo(args: argparse.Namespace) -> int:
    import corevital_widgets as corevital

    t0 = time.perf_counter()
    print("loading SmolLM2-135M-Instruct (built-in default, offline) …", flush=True)
    model, tokenizer = corevital.load_default_model()
    t_load = time.perf_counter() - t0
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}], tokenize=False,
                                           add_generation_prompt=True)
    print(f"loaded in {t_load:.1f} s; analysing {args.prompt!r} ({args.max_new_tokens} new tokens) …", flush=True)
    trace = corevital.analyze(model, prompt, tokenizer, max_new_tokens=args.max_new_tokens, progress=True)
    print()
    print(trace.summary())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    size = trace.save(out)
    print(f"\nwrote {out} ({size:,} bytes) — reload with corevital.load_trace({str(out)!r})")
    html = _write_html(trace, Path(args.html)) if args.html else None
    if html:
        print(f"wrote {html} — open it in a browser (no kernel needed)")
    return 0


def _write_html(trace, path: Path) -> Path:
    from .widgets.html_export import export_html

    path.parent.mkdir(parents=True, exist_ok=True)
    return export_html(trace, path, title=f"corevital — {trace.meta.get('model_name', '')}")


def _summary(args: argparse.Namespace) -> int:
    import corevital_widgets as corevital

    try:
        trace = corevital.load_trace(args.file)
    except (corevital.TraceFileError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(trace.summary())
    return 0


def _fail(message: str, status: int = 2) -> int:
    print(f"corevital: error: {message}", file=sys.stderr)
    return status


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No weight-loading bars or load-time chatter from transformers (restored afterwards: main()
    may run inside another program); never the hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load(model_dir: str, dtype: str) -> tuple[Any, Any]:
    from .model_dir import ModelDirLoader

    t0 = time.perf_counter()
    print(f"loading {model_dir} …", file=sys.stderr, flush=True)
    try:
        model, tokenizer = ModelDirLoader(model_dir, dtype=dtype)()
    except (OSError, ValueError) as err:
        raise UsageError(f"could not load the model in {model_dir}: {str(err).splitlines()[0]}") from None
    print(f"loaded {type(model).__name__} in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return model, tokenizer


def _chat(tokenizer: Any, texts: list[str], model_dir: str) -> list[str]:
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError(f"the tokenizer in {model_dir} has no chat template; drop --chat (the prompts are then used as they are)")
    return [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
            for t in texts]


def _analyze(args: argparse.Namespace) -> int:
    import corevital_widgets as corevital

    from .model_dir import check_model_dir

    check_model_dir(args.model_dir)
    if not args.prompt.strip():
        raise UsageError("--prompt is empty; pass some text")
    with _quiet_transformers():
        model, tokenizer = _load(args.model_dir, args.dtype)
    prompt = _chat(tokenizer, [args.prompt], args.model_dir)[0] if args.chat else args.prompt
    try:
        trace = corevital.analyze(model, prompt, tokenizer, max_new_tokens=args.max_new_tokens, progress=True)
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from None
    print(trace.summary())
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        size = trace.save(out)
        print(f"wrote {out} ({size:,} bytes)", file=sys.stderr)
    if args.html:
        print(f"wrote {_write_html(trace, Path(args.html))}", file=sys.stderr)
    return 0


def _read_prompt_file(path: str) -> list[str]:
    from .prompt_files import PARQUET_SUFFIXES, read_jsonl, read_parquet

    return read_parquet(path) if Path(path).suffix.lower() in PARQUET_SUFFIXES else read_jsonl(path)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _verdict_counts(summaries: list[Any]) -> str:
    from collections import Counter

    counts = Counter(s.get("verdict") for s in summaries if s is not None)
    return ", ".join(f"{counts[c]} {c}" for c in ("green", "yellow", "red") if counts[c])


def _batch(args: argparse.Namespace) -> int:
    from .batch import analyze_many, prompt_key, resume_summaries, write_manifest
    from .model_dir import ModelDirLoader, check_model_dir

    check_model_dir(args.model_dir)
    prompts = _read_prompt_file(args.prompts)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.workers is not None and not args.ray:
        raise UsageError("--workers needs --ray (without it one process traces the prompts)")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.chat:
        from .model_dir import load_tokenizer

        with _quiet_transformers():
            prompts = _chat(load_tokenizer(args.model_dir), prompts, args.model_dir)
    loader = ModelDirLoader(args.model_dir, dtype=args.dtype)
    kwargs: dict[str, Any] = {"max_new_tokens": args.max_new_tokens}
    keys = [prompt_key(i, p, loader.model_name, kwargs) for i, p in enumerate(prompts)]
    out.mkdir(parents=True, exist_ok=True)
    summaries = resume_summaries(out, keys)
    write_manifest(out, loader.model_name, kwargs, prompts, keys, summaries)  # analyze_many then finds them cached
    done = sum(s is not None for s in summaries)
    if done == len(prompts):
        print(f"all {len(prompts)} prompts are already traced in {out} ({_verdict_counts(summaries)})", file=sys.stderr)
        return 0
    if done:
        print(f"{done} of {len(prompts)} prompts already traced in {out}; tracing the remaining {len(prompts) - done}",
              file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        if args.ray:
            try:
                import ray  # noqa: F401
            except ImportError:
                raise UsageError("--ray needs Ray Data: pip install 'corevital-widgets[ray]'") from None
            from .distributed import ray_analyze_many

            ts = ray_analyze_many(loader, prompts, out, address=None if args.ray == "local" else args.ray,
                                  num_workers=args.workers, batch_size=args.batch_size, **kwargs)
        else:
            with _quiet_transformers():
                model, tokenizer = _load(args.model_dir, args.dtype)
            extra = {"batch_size": args.batch_size} if args.batch_size > 1 else {}
            ts = analyze_many(model, prompts, tokenizer, out_dir=out, progress=True, **extra, **kwargs)
    except KeyboardInterrupt:
        saved = sum(s is not None for s in resume_summaries(out, keys))
        print(f"\ninterrupted: {saved} of {len(prompts)} prompts are saved in {out}; run the same command again to resume",
              file=sys.stderr)
        return 130
    print(f"traced {_n(len(prompts) - done, 'prompt')} in {time.perf_counter() - t0:.1f} s; {len(ts)} traces in {out} "
          f"({_verdict_counts(ts.summaries)}); open them with corevital.TraceSet.load({str(out)!r})", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="corevital", description="See inside a language model while it generates.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="analyse a prompt on the built-in SmolLM2 and print a summary")
    demo.add_argument("--prompt", default=DEFAULT_QUESTION, help="the user message (a chat template is applied)")
    demo.add_argument("--max-new-tokens", type=int, default=64)
    demo.add_argument("--out", default="artifacts/demo.cvtrace", help="where to write the trace file")
    demo.add_argument("--html", default="artifacts/demo.html", help="where to write the standalone HTML page ('' to skip)")
    demo.set_defaults(func=_demo)
    summ = sub.add_parser("summary", help="print the summary of a saved trace file")
    summ.add_argument("file")
    summ.set_defaults(func=_summary)

    an = sub.add_parser("analyze", help="analyse one prompt on a local Hugging Face model folder")
    an.add_argument("model_dir", metavar="MODEL_DIR", help="folder with config.json, weights and tokenizer files")
    an.add_argument("--prompt", required=True, help="the prompt text (with --chat: the user message)")
    an.add_argument("--chat", action="store_true", help="apply the tokenizer's chat template to the prompt")
    an.add_argument("--max-new-tokens", type=int, default=64)
    an.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    an.add_argument("--out", help="write the trace file here (.cvtrace)")
    an.add_argument("--html", help="write a standalone HTML page here")
    an.set_defaults(func=_analyze)

    ba = sub.add_parser("batch", help="trace every prompt of a JSONL/Parquet file into a folder (resumable)")
    ba.add_argument("model_dir", metavar="MODEL_DIR", help="folder with config.json, weights and tokenizer files")
    ba.add_argument("prompts", metavar="PROMPTS", help='a .jsonl file with one {"prompt": ...} per line, or a .parquet file')
    ba.add_argument("--out", required=True, help="output folder: one .cvtrace per prompt and manifest.json")
    ba.add_argument("--batch-size", type=int, default=1, help="prompts per generate call")
    ba.add_argument("--ray", metavar="ADDRESS", help="run on Ray: 'local' (start one here), 'auto' or a cluster address")
    ba.add_argument("--workers", type=int, default=None, help="with --ray: model replicas (default: one per GPU)")
    ba.add_argument("--max-new-tokens", type=int, default=64)
    ba.add_argument("--chat", action="store_true", help="apply the tokenizer's chat template to every prompt")
    ba.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    ba.set_defaults(func=_batch)

    args = parser.parse_args(argv)
    from .model_dir import ModelDirError
    from .prompt_files import PromptFileError

    try:
        return int(args.func(args))
    except (UsageError, ModelDirError, PromptFileError) as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
