"""The ``corevital`` command: ``corevital demo`` and ``corevital summary FILE``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_QUESTION = "Why is the sky blue? Answer in two sentences."


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
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
