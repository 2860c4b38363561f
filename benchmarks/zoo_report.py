"""Architecture-zoo report: build every tiny model of ``tests/zoo_models.py`` and check it.

For every entry of the causal-LM and seq2seq-LM auto mappings: build the tiny random-weight
model, run ``generate`` (20 prompt ids, 6 greedy new tokens; for seq2seq the ids are the encoder
input) and an eager forward with ``output_attentions=True`` (then restore the attention
implementation), each build guarded so that a failure becomes a row. One row per entry:

    model_type  kind  class  build_s  params  L (decoder layers)  sw (config sliding_window)
    AAF (modeling source uses ALL_ATTENTION_FUNCTIONS)  maps (attention maps the eager forward
    returned)  status (ok / skip reason / ERROR type: message) | layer kinds (A = softmax attention:
    a non-cross submodule whose class name ends in "Attention"/"MLA" and computes softmax; else
    the token-mixer class names, "A+X" for a block with both) | config layer_types (initials:
    sa = sliding_attention, fa = full_attention, la = linear_attention, ...) | keyword arguments
    that the modeling source passes to the attention function beyond dropout / scaling

Totals at the end: counts by status and skip reason, build / import / check seconds, hybrids,
architectures without softmax attention or without ALL_ATTENTION_FUNCTIONS, unusual kwargs.

    .venv/bin/python benchmarks/zoo_report.py [--only llama,t5] [--no-skip] [--vocab 512] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
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

from tests.zoo_models import ZooEntry, build_tiny, sample_input_ids, zoo_entries  # noqa: E402

NEW_TOKENS = 6
PROMPT_LEN = 20
_CROSS = re.compile(r"cross|encdec|enc_dec|encoder_attn", re.I)
_NOT_MIXER = re.compile(r"norm|mlp|moe|expert|feedforward|ffn|dropout|^linear$|identity|activation|act_fn|embedding|"
                        r"gate$|router|sparse|dense|scale|residual|layerscale|laurel|altup|rotary|rope|"
                        r"hyperconnection|hyper_connection|^hc_|lora|proj$|intermediate|output$|^conv1d$|layerff", re.I)
ATTENTION_SUFFIXES = ("Attention", "MLA")  # longcat_flash's softmax attention class is LongcatFlashMLA
_USUAL_KWARGS = {"dropout", "scaling", "attention_mask", "query", "key", "value", "module", "kwargs"}


def _largest_block_list(root: torch.nn.Module, exclude: str) -> tuple[str, torch.nn.ModuleList | None]:
    best, best_name, best_n = None, "", -1
    for name, mod in root.named_modules():
        if not isinstance(mod, torch.nn.ModuleList) or len(mod) == 0:
            continue
        if re.search(rf"(^|\.|_)({exclude})", name.lower()) and "decoder" not in name.lower():
            continue
        if not all(isinstance(m, torch.nn.Module) and len(list(m.children())) > 0 for m in mod):
            continue
        n = sum(p.numel() for p in mod.parameters())
        if n > best_n:
            best, best_name, best_n = mod, name, n
    return best_name, best


def layer_list(model: torch.nn.Module, enc_dec: bool) -> tuple[str, torch.nn.ModuleList | None]:
    """The decoder's stack of blocks: the ModuleList of blocks with the most parameters, within
    ``model.get_decoder()`` where that is a sub-model with blocks (else within the whole model,
    outside any vision / audio tower and, for an encoder-decoder, outside the encoder)."""
    towers = "vision|visual|audio|image|vq|patcher|speech|projector|mtp|acoustic|semantic|tower|timestamp|asr|diariz"
    try:
        dec = model.get_decoder()
    except Exception:  # noqa: BLE001 -- not every model has one
        dec = None
    if isinstance(dec, torch.nn.Module) and dec is not model:
        name, layers = _largest_block_list(dec, towers)
        if layers is not None:
            prefix = next((n for n, m in model.named_modules() if m is dec), "")
            return f"{prefix}.{name}".strip("."), layers
    return _largest_block_list(model, towers + ("|encoder" if enc_dec else ""))


def per_layer_blocks(model: torch.nn.Module, name: str, layers: torch.nn.ModuleList) -> list[torch.nn.Module]:
    """The blocks of ``layers``; where the model keeps a layer's parts in parallel lists of the
    same length (XLM: ``attentions``, ``ffns``, ``layer_norm1``...), each block gathers all of them."""
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    siblings = {n: m for n, m in parent.named_children() if isinstance(m, torch.nn.ModuleList) and len(m) == len(layers)}
    if len(siblings) <= 1:
        return list(layers)
    return [torch.nn.ModuleDict({n: m[i] for n, m in siblings.items()}) for i in range(len(layers))]


_SOFTMAX_MARKERS = ("attention_interface", "eager_attention_forward", "ALL_ATTENTION_FUNCTIONS", "softmax",
                    "scaled_dot_product_attention", "logsumexp")  # reformer's LSH attention normalizes with logsumexp


def is_softmax_attention(cls: type) -> bool:
    """Whether an attention class computes softmax attention (its source, or its bases', calls the
    attention interface / eager_attention_forward / softmax / SDPA): this separates e.g. MiniMax's
    lightning attention or Kimi's delta attention (linear, named "...Attention") from the rest."""
    for klass in cls.__mro__:
        if klass.__module__.startswith("torch"):
            break
        try:
            src = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if any(m in src for m in _SOFTMAX_MARKERS):
            return True
    return False


def block_kind(block: torch.nn.Module) -> str:
    """'A' when the block has a (non-cross) softmax-attention submodule (class name ending in
    'Attention' or 'MLA'); the other token mixers of the block (top-most transformers submodules
    that are not norms / MLPs / MoEs / attention) are listed by class name, e.g. 'BambaMixer',
    'A+FalconH1Mixer' for a parallel hybrid, 'MiniMaxLightningAttention' for linear attention."""
    kinds, taken, cross = [], [], False
    bname = type(block).__name__
    for name, mod in block.named_modules():
        if not name or any(name.startswith(t + ".") for t in taken):
            continue
        cname = type(mod).__name__
        # match on what follows the model's own prefix ("GraniteMoeHybridMambaLayer" -> "MambaLayer")
        cut = len(os.path.commonprefix([cname, bname]))
        while 0 < cut < len(cname) and not (cname[cut].isupper() and (cut >= len(bname) or bname[cut].isupper())):
            cut -= 1  # back to a CamelCase word start ("JambaMLP" vs "JambaMambaDecoderLayer" -> "MLP")
        own = cname[cut:] or cname
        if _CROSS.search(name) or _CROSS.search(cname):
            taken.append(name)
            cross = True
            continue
        if re.search(r"DecoderLayer$|HybridLayer$", own):
            continue  # a container (zamba's hybrid layer = shared attention block + mamba block): look inside
        if re.search(rf"({'|'.join(ATTENTION_SUFFIXES)})(Block)?$", cname):
            # a wrapper (BertAttention -> BertSelfAttention, T5LayerSelfAttention -> T5Attention) counts
            # as softmax attention when anything inside it is
            softmax = any(is_softmax_attention(type(m)) for m in mod.modules()
                          if type(m).__module__.startswith("transformers"))
            kinds.append("A" if softmax else cname)
            taken.append(name)
        elif any(re.search(rf"({'|'.join(ATTENTION_SUFFIXES)})(Block)?$", type(m).__name__) for m in mod.modules()):
            continue  # holds an attention module (dbrx's NormAttentionNorm): look inside
        elif _NOT_MIXER.search(own) or _NOT_MIXER.search(name.split(".")[-1]):
            taken.append(name)  # norms, MLPs, MoEs: not token mixers, and nothing inside them is
        elif type(mod).__module__.startswith("transformers") and any(True for _ in mod.parameters()):
            kinds.append(cname)
            taken.append(name)
    if not kinds and cross:
        kinds = ["cross-attn-only"]
    if not kinds:  # an MLP / MoE-only block (nemotron_h's "mlp" and "moe" layers)
        kinds = [f"ffn-only:{type(m).__name__}" for n, m in block.named_modules() if n.count(".") <= 1
                 and re.search(r"mlp|moe|expert|feedforward|ffn", type(m).__name__, re.I)][:1]
    kinds = sorted(dict.fromkeys(kinds), key=lambda k: k != "A")
    return "+".join(kinds) or type(block).__name__


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


def restored(before: dict, after: dict) -> bool:
    """Every implementation that was set before is set again (sub-configs that had none may now
    have one: set_attn_implementation fills them in)."""
    return all(restored(v, after.get(k, {})) if isinstance(v, dict) else after.get(k) == v for k, v in before.items())


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
    after = impl_tree(model.config)
    if not restored(before, after):
        raise RuntimeError(f"attention implementation not restored: {after} != {before}")
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
        row["types"] = ",".join("".join(w[0] for w in str(t).split("_")) for t in (getattr(cfg, "layer_types", None) or []))
        row["sliding_window"] = getattr(cfg, "sliding_window", None)
        name, layers = layer_list(model, bool(model.config.is_encoder_decoder))
        if layers is not None:
            row["layers"] = len(layers)
            row["layers_name"] = name
            row["layer_kinds"] = ",".join(block_kind(b) for b in per_layer_blocks(model, name, layers))
        row["all_attn"], row["extra_kwargs"] = attention_source_facts(model)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # a few models print warnings from generate
            row.update(check(model, entry, vocab_size))
        row["check_s"] = round(time.perf_counter() - t0, 3)
        if row["new_tokens"] != NEW_TOKENS:
            row["status"] = f"ok (generated {row['new_tokens']} new tokens, not {NEW_TOKENS})"
        if "A" in re.split(r"[,+]", row["layer_kinds"]) and not row["attn_maps"]:
            row["status"] = "ok (but output_attentions returned no attention maps)"
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
    head = (f"{'model_type':24} {'kind':7} {'class':40} {'build_s':>7} {'params':>7} {'L':>2} {'sw':>4} {'AAF':3} {'maps':>4} "
            f"status | layer kinds (A = softmax attention) | config layer_types | attention kwargs")
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
        sw = str(row["sliding_window"]) if row["sliding_window"] is not None else "-"
        aaf = {True: "y", False: "n", None: "-"}[row["all_attn"]]
        maps = row.get("attn_maps")
        print(f"{entry.model_type[:24]:24} {entry.kind:7} {entry.class_name[:40]:40} {b:>7} {p:>7} {row['layers'] or '-':>2} {sw:>4} "
              f"{aaf:3} {'-' if maps is None else maps:>4} {status} | {row['layer_kinds']} | {row.get('types') or '-'} | "
              f"{','.join(row['extra_kwargs']) or '-'}", flush=True)
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
    ok = [r for r in rows if r["status"].startswith("ok")]
    hybrids = [r for r in ok if r["layer_kinds"] and any(k != "A" for k in r["layer_kinds"].split(","))
               and "A" in r["layer_kinds"].replace("+", ",").split(",")]
    print(f"hybrids ({len(hybrids)}): " + "; ".join(f"{r['model_type']} [{r['layer_kinds']}]" for r in hybrids))
    no_attn = [r["model_type"] for r in ok if r["layer_kinds"] and "A" not in r["layer_kinds"].replace("+", ",").split(",")]
    print(f"no softmax attention ({len(no_attn)}): {', '.join(no_attn)}")
    print(f"not through ALL_ATTENTION_FUNCTIONS: {', '.join(sorted({r['model_type'] for r in ok if r['all_attn'] is False}))}")
    kws = collections.defaultdict(list)
    for r in ok:
        for kw in r["extra_kwargs"]:
            kws[kw].append(r["model_type"])
    for kw, mts in sorted(kws.items()):
        print(f"attention kwarg {kw}: {', '.join(sorted(set(mts)))}")
    print(f"wall {total:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
