"""Architecture-zoo report: build every tiny model of ``tests/zoo_models.py`` and check it.

For every entry of the causal-LM and seq2seq-LM auto mappings: build the tiny random-weight
model, run ``generate`` (20 prompt ids, 6 greedy new tokens) and an eager forward with
``output_attentions=True``, and print one row: model_type, kind, class, status (ok / skip reason /
error), build seconds, parameters, decoder layers with the kind of each (A = softmax attention,
otherwise the mixer class names), whether the config has ``layer_types`` / ``sliding_window``,
whether the modeling file routes attention through ``ALL_ATTENTION_FUNCTIONS``, and the keyword
arguments its attention calls pass beyond the usual ones. Totals at the end.

    .venv/bin/python benchmarks/zoo_report.py [--only llama,t5] [--no-skip] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import inspect
import json
import os
import re
import sys
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tests.zoo_models import ZooEntry, build_tiny, sample_input_ids, tiny_config, zoo_entries  # noqa: E402

NEW_TOKENS = 6
PROMPT_LEN = 20
_CROSS = re.compile(r"cross|encdec|enc_dec|encoder_attn", re.I)
_NOT_MIXER = re.compile(r"norm|mlp|moe|expert|feedforward|ffn|dropout|^linear$|identity|act|embedding|gate$|router|"
                        r"sparse|dense|scale|residual|layerscale|laurel|altup", re.I)
_USUAL_KWARGS = {"dropout", "scaling", "attention_mask", "query", "key", "value", "module", "kwargs"}


def layer_list(model: torch.nn.Module, enc_dec: bool) -> tuple[str, torch.nn.ModuleList | None]:
    """The decoder's stack of blocks: the ModuleList of blocks (outside any vision / audio tower,
    and outside the encoder of an encoder-decoder) with the most parameters."""
    best, best_name, best_n = None, "", -1
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.ModuleList) or len(mod) == 0:
            continue
        lname = name.lower()
        towers = "vision|visual|audio|image|vq|patcher|speech|projector|mtp|acoustic|semantic" + ("|encoder" if enc_dec else "")
        if re.search(rf"(^|\.|_)({towers})", lname) and "decoder" not in lname:
            continue
        if not all(isinstance(m, torch.nn.Module) and len(list(m.children())) > 0 for m in mod):
            continue
        n = sum(p.numel() for p in mod.parameters())
        if n > best_n:
            best, best_name, best_n = mod, name, n
    return best_name, best


def block_kind(block: torch.nn.Module) -> str:
    """'A' if the block has a (non-cross) softmax-attention submodule (class name ends with
    'Attention'), else the names of its mixer submodules."""
    for name, mod in block.named_modules():
        if type(mod).__name__.endswith("Attention") and not _CROSS.search(name) and not _CROSS.search(type(mod).__name__):
            return "A"
    mixers = [type(m).__name__ for n, m in block.named_children() if not _NOT_MIXER.search(type(m).__name__)
              and not _NOT_MIXER.search(n) and len(list(m.parameters())) > 0]
    if not mixers:  # look one level deeper
        for _, child in block.named_children():
            mixers += [type(m).__name__ for n, m in child.named_children() if not _NOT_MIXER.search(type(m).__name__)
                       and len(list(m.parameters())) > 0]
    return "+".join(dict.fromkeys(mixers)) or type(block).__name__


def attention_source_facts(model: torch.nn.Module) -> tuple[bool, list[str]]:
    """(uses ALL_ATTENTION_FUNCTIONS, unusual keyword arguments of attention calls) from the
    modeling files of every transformers module the model is made of."""
    mods = {sys.modules[type(m).__module__] for m in model.modules() if type(m).__module__.startswith("transformers.models")}
    uses, extra = False, set()
    for mod in mods:
        try:
            src = inspect.getsource(mod)
        except (OSError, TypeError):
            continue
        uses |= "ALL_ATTENTION_FUNCTIONS" in src
        for m in re.finditer(r"(?<!def )\b(attention_interface|eager_attention_forward|attn_fn|attention_fn|ALL_ATTENTION_FUNCTIONS\[[^\]]*\])\s*\(", src):
            depth, i = 1, m.end()
            while depth and i < len(src):
                depth += {"(": 1, ")": -1}.get(src[i], 0)
                i += 1
            for kw in re.findall(r"(?:^|[,(\s])(\w+)\s*=(?!=)", src[m.end():i - 1]):
                if kw not in _USUAL_KWARGS:
                    extra.add(kw)
    return uses, sorted(extra)


def impl_tree(config):
    """The attention implementation of a config and all its sub-configs, in the nested-dict form
    that ``set_attn_implementation`` takes (so that restoring it touches no sub-model that does
    not support the top-level implementation)."""
    tree = {"": config._attn_implementation}
    for k in getattr(config, "sub_configs", {}) or {}:
        sub = getattr(config, k, None)
        if sub is not None and getattr(sub, "_attn_implementation", None) is not None:
            tree[k] = impl_tree(sub)
    return tree


def check(model, entry: ZooEntry, vocab_size: int) -> dict:
    """Run generate and the eager forward; return facts, raise on failure."""
    ids = sample_input_ids(vocab_size, PROMPT_LEN)
    mask = torch.ones_like(ids)
    facts = {}
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False)
    seqs = out if isinstance(out, torch.Tensor) else out.sequences
    facts["gen_shape"] = list(seqs.shape)
    new = seqs.shape[-1] - (1 if model.config.is_encoder_decoder else PROMPT_LEN)  # enc-dec: minus the start token
    facts["new_tokens"] = int(new)
    before = impl_tree(model.config)
    model.set_attn_implementation("eager")
    try:
        kwargs = dict(input_ids=ids, attention_mask=mask, output_attentions=True)
        if model.config.is_encoder_decoder:
            kwargs["decoder_input_ids"] = ids[:, :8]
        with torch.no_grad():
            fwd = model(**kwargs)
        atts = getattr(fwd, "decoder_attentions", None) if model.config.is_encoder_decoder else None
        if atts is None:
            atts = getattr(fwd, "attentions", None)
        facts["attn_maps"] = sum(a is not None for a in atts) if atts is not None else 0
    finally:
        model.set_attn_implementation(before)
    facts["attn_impl"] = before[""]
    if impl_tree(model.config) != before:
        raise RuntimeError(f"attention implementation not restored: {impl_tree(model.config)} != {before}")
    return facts


def report_entry(entry: ZooEntry, vocab_size: int, no_skip: bool) -> dict:
    row = dict(model_type=entry.model_type, kind=entry.kind, cls=entry.class_name, status="ok", build_s=None,
               params=None, layers=None, layer_kinds="", layer_types=None, sliding_window=None, all_attn=None,
               extra_kwargs=[], error=None)
    if entry.skip_reason is not None and not no_skip:
        row["status"] = f"skip: {entry.skip_reason}"
        return row
    if entry.skip_reason is not None:
        entry = ZooEntry(entry.model_type, entry.class_name, entry.kind, None)
    try:
        import transformers

        t0 = time.perf_counter()
        getattr(transformers, entry.class_name)  # import the modeling module (timed apart)
        row["import_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        model = build_tiny(entry, vocab_size)
        row["build_s"] = round(time.perf_counter() - t0, 3)
        row["params"] = sum(p.numel() for p in model.parameters())
        cfg = model.config.get_text_config(decoder=True)
        row["layer_types"] = getattr(cfg, "layer_types", None) is not None
        row["sliding_window"] = getattr(cfg, "sliding_window", None)
        name, layers = layer_list(model, bool(model.config.is_encoder_decoder))
        if layers is not None:
            row["layers"] = len(layers)
            row["layers_name"] = name
            row["layer_kinds"] = ",".join(block_kind(b) for b in layers)
        row["all_attn"], row["extra_kwargs"] = attention_source_facts(model)
        t0 = time.perf_counter()
        row.update(check(model, entry, vocab_size))
        row["check_s"] = round(time.perf_counter() - t0, 3)
        if row["new_tokens"] != NEW_TOKENS:
            row["status"] = f"ok (generated {row['new_tokens']} new tokens, not {NEW_TOKENS})"
    except Exception as e:  # noqa: BLE001 -- the report records every failure
        row["status"] = "error"
        row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
        row["traceback"] = traceback.format_exc()[-3000:]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated model_types")
    ap.add_argument("--no-skip", action="store_true", help="also try entries that have a skip_reason")
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--json", help="write the rows (with tracebacks) here")
    ap.add_argument("--tracebacks", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    only = set(args.only.split(",")) if args.only else None
    rows = []
    t_all = time.perf_counter()
    head = f"{'model_type':26} {'kind':7} {'class':46} {'build_s':>7} {'params':>8} {'L':>2} {'lt':2} {'sw':>4} {'AAF':3} status / layers"
    print(head)
    print("-" * len(head))
    for entry in zoo_entries():
        if only and entry.model_type not in only:
            continue
        row = report_entry(entry, args.vocab, args.no_skip)
        rows.append(row)
        status = row["status"] if row["status"] != "error" else f"ERROR {row['error']}"
        b = f"{row['build_s']:.2f}" if row["build_s"] is not None else "-"
        p = f"{row['params'] / 1e3:.0f}k" if row["params"] else "-"
        lt = {True: "y", False: "n", None: "-"}[row["layer_types"]]
        sw = str(row["sliding_window"]) if row["sliding_window"] is not None else "-"
        aaf = {True: "y", False: "n", None: "-"}[row["all_attn"]]
        print(f"{entry.model_type:26} {entry.kind:7} {entry.class_name[:46]:46} {b:>7} {p:>8} {row['layers'] or '-':>2} {lt:2} {sw:>4} {aaf:3} "
              f"{status} | {row['layer_kinds']}" + (f" | kw: {','.join(row['extra_kwargs'])}" if row["extra_kwargs"] else ""),
              flush=True)
        if args.tracebacks and row.get("traceback"):
            print(row["traceback"])
    total = time.perf_counter() - t_all
    c = collections.Counter("ok" if r["status"].startswith("ok") else "error" if r["status"] == "error" else "skip" for r in rows)
    skips = collections.Counter(r["status"] for r in rows if r["status"].startswith("skip"))
    built = [r for r in rows if r["build_s"] is not None]
    print()
    print(f"entries {len(rows)}: ok {c['ok']}, skipped {c['skip']}, errors {c['error']}")
    for s, n in skips.most_common():
        print(f"  {n:3}  {s}")
    if built:
        bs = sorted(r["build_s"] for r in built)
        print(f"build: total {sum(bs):.1f} s over {len(bs)} models, median {bs[len(bs) // 2]:.3f} s, max {bs[-1]:.2f} s "
              f"({max(built, key=lambda r: r['build_s'])['model_type']}); modeling imports {sum(r.get('import_s', 0) for r in built):.1f} s; "
              f"checks {sum(r.get('check_s', 0) or 0 for r in built):.1f} s")
        slow = [f"{r['model_type']} {r['build_s']:.2f}" for r in built if r["build_s"] > 0.5]
        if slow:
            print(f"builds over 0.5 s: {', '.join(slow)}")
    print(f"wall {total:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
