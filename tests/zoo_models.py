"""A zoo of tiny random-weight models: one per architecture of transformers' causal-LM and
seq2seq-LM auto mappings, for the architecture-coverage test matrix.

The entries are enumerated from ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` and
``MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES`` (never a hand list). ``build_tiny`` starts from the
default config of each architecture and shrinks it generically (``_shrink_dict``, ``_rederive``): hidden 64, 4 heads /
2 key-value heads, head_dim 16, intermediate 128, 4 experts top-2, max positions >= 256, the given
vocabulary, sliding windows of 4 tokens. Architectures with a per-layer pattern (``layer_types``,
hybrid attention / state-space / convolution blocks, dense-then-MoE, ...) get 4 layers, chosen from
the default layer pattern so that every kind of layer that the full model has appears; plain
architectures get 2. Sliding windows that the default switches off by a flag (qwen2 family,
smollm3, dots1) are switched on for half the layers. Special token ids are kept below the vocabulary,
``eos_token_id`` is None (vocab_size - 1 where the config insists on an id) so that generation runs
to max_new_tokens, and encoder-decoders get a ``decoder_start_token_id``. Per-architecture
overrides (``_OVERRIDES``) exist only where the generic shrinker is not enough; each says why.

``skip_reason`` is None for every architecture that can generate from text-only ``input_ids`` (and
run an eager forward with ``output_attentions=True``); the others say why they cannot: hand-checked
reasons in ``_SKIPS`` (``benchmarks/zoo_report.py --no-skip`` shows the errors) and missing optional
packages of sub-models, detected. Builds are deterministic (``torch.manual_seed(seed)``).

    from tests.zoo_models import zoo_entries, build_tiny
    for entry in zoo_entries():
        if entry.skip_reason is None:
            model = build_tiny(entry)
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["ZooEntry", "zoo_entries", "build_tiny", "tiny_config", "sample_input_ids"]

HIDDEN = 64
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 16
INTERMEDIATE = 128
MOE_INTERMEDIATE = 32
EXPERTS = 4
TOP_K = 2
MAX_POSITIONS = 512
WINDOW = 4
PATTERN_LAYERS = 4
PLAIN_LAYERS = 2


@dataclass
class ZooEntry:
    model_type: str  # key of the auto mapping
    class_name: str  # model class name from the mapping
    kind: str  # "causal" or "seq2seq"
    skip_reason: str | None  # None if buildable as a text-only generator, else why not


def sample_input_ids(vocab_size: int = 512, length: int = 20) -> torch.Tensor:
    """A fixed ``[1, length]`` prompt of distinct ordinary ids (>= 5: clear of the special tokens)."""
    return torch.tensor([[5 + (37 * i + 11) % (vocab_size - 10) for i in range(length)]])


# --------------------------------------------------------------------------------------------
# Architectures that cannot generate from text-only input_ids. Each reason was verified by
# building the tiny model and running generate (benchmarks/zoo_report.py --no-skip shows the error).
# --------------------------------------------------------------------------------------------
_SKIPS: dict[tuple[str, str], str] = {
    ("gemma4_assistant", "causal"): "speculative-decoding drafter: forward requires the target model's inputs_embeds "
                                    "and shared_kv_states (every layer reuses the target's KV)",
    ("gemma4_unified_assistant", "causal"): "speculative-decoding drafter: forward requires the target model's "
                                            "inputs_embeds and shared_kv_states (every layer reuses the target's KV)",
    ("musicgen", "causal"): "audio-codebook decoder: input_ids are EnCodec codes shaped [batch * num_codebooks, seq], "
                            "not text",
    ("musicgen_melody", "causal"): "audio-codebook decoder: input_ids are EnCodec codes shaped "
                                   "[batch * num_codebooks, seq], not text",
    ("voxtral_realtime", "seq2seq"): "needs audio input_features: the streaming audio encoder output is added to "
                                     "every decoder step",
}

# --------------------------------------------------------------------------------------------
# Per-architecture config overrides, applied to the config dict after the generic shrinker ("a.b"
# sets key b of sub-config a). Only where the generic shrinker is not enough; each says why.
# --------------------------------------------------------------------------------------------
_OVERRIDES: dict[str, dict[str, Any]] = {
    # the default config lists every layer as attention (full_attn_idxs = all): make it a real hybrid
    "lfm2": {"layer_types": ["conv", "full_attention", "conv", "full_attention"], "full_attn_idxs": None},
    # layer_types is required and has no default
    "lfm2_moe": {"layer_types": ["conv", "full_attention", "conv", "full_attention"]},
    # default: no attention layer at all (attn_layer_indices=None), which generate cannot handle
    "bamba": {"attn_layer_indices": [1, 3]},
    # default: every layer mamba (layer_types=None)
    "granitemoehybrid": {"layer_types": ["mamba", "attention", "mamba", "attention"]},
    # the shared attention block is tied across hybrid layers: with one hybrid layer there is nothing
    # to tie into and post_init fails, so keep two
    "zamba": {"layers_block_type": ["mamba", "hybrid", "mamba", "hybrid"]},
    # 1 input + 2 recurrent (looped twice) + 1 output layer; the dict form interleaves "mlp" blocks,
    # so let __post_init__ derive the 4 layer types (s, s, s, full) again
    "dory": {"layer_types": None, "num_hidden_layers": 4, "n_input_layers": 1, "n_output_layers": 1,
             "n_recurrent_layers": None},
    # transformers' native mLSTM kernels assume qk head dim == v head dim (the 0.5 default fails)
    "xlstm": {"qk_dim_factor": 1.0},
    # DbrxAttention reads attn_config.rope_theta, which DbrxAttentionConfig no longer defines
    # ... and clamps q/k/v with clip_qkv unconditionally (torch.clamp fails on the None default)
    "dbrx": {"attn_config.rope_theta": 10000.0, "attn_config.clip_qkv": 8.0},
    # the QSA indexer of the indexed-attention layers has no defaults (all None)
    "qwen4_exp_text": {"indexer_n_heads": 2, "indexer_kv_heads": 1, "indexer_head_dim": 16, "indexer_budget": 8,
                       "indexer_compress_ratio": 4},
    "qwen4_exp": {"text_config.indexer_n_heads": 2, "text_config.indexer_kv_heads": 1,
                  "text_config.indexer_head_dim": 16, "text_config.indexer_budget": 8,
                  "text_config.indexer_compress_ratio": 4},
    # axial position embeddings: the factors must sum to hidden_size, their product >= max positions
    "reformer": {"axial_pos_embds_dim": [32, 32], "axial_pos_shape": [16, 32]},
    # the default has n_routed_experts=None, which Dots1Experts cannot build (it is a MoE model)
    "dots1": {"n_routed_experts": EXPERTS, "num_experts_per_tok": TOP_K, "n_shared_experts": 1},
    # SWA layers need head_dim == their qk_nope_head_dim (2x the shrunk global 8) + qk_rope_head_dim (8)
    "dots3_note_text": {"head_dim": 24},
    "dots3_note": {"text_config.head_dim": 24},
    # generate builds DynamicCache(config=BltConfig), which needs a top-level num_hidden_layers
    # (the composite config has none; its sub-models' layers are all <= 4)
    "blt": {"num_hidden_layers": 4},
    # the default lists every layer as full attention with rope_parameters={} (KeyError in the rotary
    # embedding): use the sliding/full pattern of its sliding_window, NoPE on the full layers (the
    # modeling code skips rotary for a None entry), mrope sections summing to head_dim / 2
    "cohere_compass_text": {"layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
                            "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0,
                                                                      "mrope_section": [4, 2, 2]},
                                                "full_attention": None}},
    # the defaults list only full-attention layers although the models have sliding-window layers
    # (rope parameters and masks for "sliding_attention"): use both
    "laguna": {"layer_types": ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]},
    "mellum": {"layer_types": ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]},
    # the looped core (layers start..end-1, run loop_num_passes times) must lie within the 4 layers,
    # start and end multiples of n_layers_per_attn_res_block
    "inkling2_loop_text": {"n_layers_per_attn_res_block": 1, "loop_layer_index_start": 1, "loop_layer_index_end": 3,
                           "loop_num_passes": 2},
    # expands attention_types into one entry per layer: 2 x (global, local) = 4 layers
    "gpt_neo": {"attention_types": [[["global", "local"], 2]]},
}


# --------------------------------------------------------------------------------------------
# Generic shrinker
# --------------------------------------------------------------------------------------------
_HIDDEN_KEYS = {"hidden_size", "hidden_size_global", "adapter_in_dim", "adapter_input_size", "adapter_out_dim",
                "audio_hidden_size", "hidden_dim", "encoder_hidden_size", "d_model", "n_embd", "embed_dim", "emb_dim", "model_dim", "embedding_dim",
                "word_embed_proj_dim", "input_embedding_size", "output_embedding_size", "lru_width",
                "attention_hidden_size", "dim"}
_LAYER_KEYS = {"num_hidden_layers", "n_layer", "n_layers", "num_layers", "decoder_layers", "encoder_layers",
               "num_decoder_layers", "num_encoder_layers", "num_blocks"}
_HEAD_KEYS = {"num_attention_heads", "num_attention_heads_per_layer", "n_head", "n_heads", "num_heads", "encoder_attention_heads",
              "decoder_attention_heads", "attention_heads", "num_decoder_attention_heads",
              "num_encoder_attention_heads", "swa_num_attention_heads", "linear_num_heads",
              "linear_num_value_heads", "index_n_heads", "speech_encoder_attention_heads",
              "t2u_encoder_attention_heads", "t2u_decoder_attention_heads", "mamba_n_heads", "mamba_num_heads",
              "n_mamba_heads"}
_KV_HEAD_KEYS = {"num_key_value_heads", "num_kv_heads", "multi_query_group_num", "num_query_groups",
                 "swa_num_key_value_heads", "n_kv_heads", "linear_num_key_heads", "indexer_kv_heads"}
_HEAD_DIM_KEYS = {"head_dim", "d_kv", "d_head", "dim_head", "kv_channels", "attention_head_dim",
                  "attention_head_size", "swa_head_dim", "v_head_dim", "linear_key_head_dim",
                  "linear_value_head_dim", "linear_head_dim", "index_head_dim", "mamba_d_head", "mamba_head_dim",
                  "mamba_headdim", "indexer_head_dim", "qk_head_dim"}
_INTERMEDIATE_KEYS = {"intermediate_size", "ffn_dim", "d_ff", "n_inner", "encoder_ffn_dim", "decoder_ffn_dim",
                      "dff", "d_inner", "dim_ff", "ffn_hidden_size", "feed_forward_size", "intermediate_size_mlp",
                      "dense_intermediate_size", "prefix_dense_intermediate_size", "speech_encoder_intermediate_size",
                      "t2u_encoder_ffn_dim", "t2u_decoder_ffn_dim", "mamba_d_ssm"}
_MOE_INTERMEDIATE_KEYS = {"moe_intermediate_size", "expert_ffn_hidden_size", "shared_expert_intermediate_size",
                          "shared_intermediate_size", "moe_shared_expert_intermediate_size",
                          "shared_experts_intermediate_size"}
_EXPERT_KEYS = {"num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"}
_TOPK_KEYS = {"num_experts_per_tok", "moe_topk", "moe_k", "top_k_experts", "num_experts_per_token"}
_POSITION_KEYS = {"max_position_embeddings", "model_max_length", "n_positions", "n_ctx", "max_seq_len", "context_length",
                  "max_target_positions", "max_decoder_position_embeddings", "max_encoder_position_embeddings",
                  "t2u_max_position_embeddings", "max_source_positions"}
_WINDOW_KEYS = {"sliding_window", "window_size", "attention_window_size", "sliding_window_size",
                "local_attention_window_len", "attention_chunk_size", "keep_window_size", "local_attention"}
_SMALL = {  # other widths / ranks / sizes: key -> value
    "q_lora_rank": 32, "kv_lora_rank": 32, "o_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8,
    "state_size": 8, "ssm_state_size": 8, "mamba_d_state": 8, "time_step_rank": 8, "mamba_dt_rank": 8,
    "n_groups": 1, "mamba_n_groups": 1, "mamba_ngroups": 1,
    "index_topk": 8, "topk_group": 1, "n_group": 2, "num_expert_group": 2, "zero_expert_num": 2,
    "hidden_size_per_layer_input": 16, "laurel_rank": 8, "adapter_rank": 16, "hc_lowrank": 16,
    "router_hidden_size": 32, "gated_norm_rank": 8, "loop_gate_rank": 16, "rotary_dim": 8,
    "embedding_size": HIDDEN, "pronunciation_embed_dim": 32, "shape_embed_dim": 32,
    "pronunciation_vocab_size": 64, "shape_vocab_size": 64, "expert_capacity": 64,
    "position_bias_num_buckets": 32, "position_bias_max_distance": 128, "dim_model_base": HIDDEN,
    "ple_embed_dim": HIDDEN, "d_rel": 8, "rel_extent": 64, "unit_embed_dim": HIDDEN,
    "lang_embed_dim": 16, "num_filters": 4, "spkr_embed_dim": 16, "encoder_hash_byte_group_vocab": 1024,
}
_VOCAB_KEYS = {"vocab_size", "vocab_size_per_layer_input", "src_vocab_size", "tgt_vocab_size", "unpadded_vocab_size",
               "char_vocab_size", "t2u_vocab_size", "unit_hifi_gan_vocab_size"}
_NONE_KEYS = {"suppress_tokens", "begin_suppress_tokens", "forced_decoder_ids", "bad_words_ids",
              "forced_eos_token_id", "forced_bos_token_id", "eos_token_id"}
# per-layer lists that are stored as layer indices (kept as indices of the kept layers)
_INDEX_LIST_HINT = re.compile(r"(idx|idxs|ids|indices|layers|index)$")
MAX_LAYERS = 8  # at most this many layers even where the default has more distinct layer kinds
_PATTERN_HINT = re.compile(r"(period|pattern|interval|every_n|layer_types|block_type|attn_layers|attention_layers|"
                           r"_idxs|layer_ids|layer_indices|first_k_dense|mlp_only|moe_layer|sparse_step|"
                           r"num_dense_layers|cross_attention_layers|mamba|ssm|linear_|conv_L|lru|xlstm|"
                           r"hybrid|no_rope)", re.I)
_NO_ELEMENTWISE = {"no_rope_layers"}
_THRESHOLD_KEYS = {"first_k_dense_replace", "num_dense_layers"}  # "the first k layers are dense"
_TAIL_KEYS = {"num_kv_shared_layers"}  # "the last k layers reuse the KV of earlier ones" (gemma3n, gemma4)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_config_dict(v: Any) -> bool:
    return isinstance(v, dict) and "model_type" in v


def _num_layers(d: dict) -> int | None:
    for k in ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "decoder_layers", "num_decoder_layers"):
        if _is_int(d.get(k)) and d[k] > 0:
            return d[k]
    for k in ("layer_types", "layers_block_type", "block_types"):  # the list alone sets the depth (nemotron_h)
        if isinstance(d.get(k), list) and len(d[k]) > 1:
            return len(d[k])
    return None


def _layer_lists(d: dict, n0: int) -> tuple[dict[str, list], dict[str, list]]:
    """(per-layer lists, layer-index lists) of a config dict with ``n0`` layers."""
    per_layer, index_lists = {}, {}
    for k, v in d.items():
        if not isinstance(v, (list, tuple)) or not v or k in _NONE_KEYS:
            continue
        ints = all(_is_int(x) for x in v)
        if ints and _INDEX_LIST_HINT.search(k) and all(0 <= x < n0 for x in v) and list(v) == sorted(set(v)):
            index_lists[k] = list(v)
        elif len(v) == n0 and n0 > 1 and all(isinstance(x, (str, int, float, bool)) or x is None for x in v):
            per_layer[k] = list(v)
    return per_layer, index_lists


def _per_layer_config(d: dict) -> dict[int, dict] | None:
    """The heterogeneous ``per_layer_config`` ({layer index: overrides}) of a config dict, if any."""
    plc = d.get("per_layer_config")
    if isinstance(plc, dict) and plc and all(str(k).lstrip("-").isdigit() for k in plc):
        return {int(k): v for k, v in plc.items()}
    return None


def _choose_layers(d: dict, n0: int, n_new: int) -> list[int]:
    """Indices of the default model's layers to keep: the first layer of every distinct layer kind
    (over all per-layer lists, index lists, per-layer config overrides, 'first k dense' and 'last k
    share KV' counts), then round-robin over the kinds, in layer order."""
    per_layer, index_lists = _layer_lists(d, n0)
    thresholds = {k: d[k] for k in _THRESHOLD_KEYS if _is_int(d.get(k))}
    tails = {k: n0 - d[k] for k in _TAIL_KEYS if _is_int(d.get(k)) and d[k] > 0}
    plc = _per_layer_config(d) or {}

    def signature(i: int) -> tuple:
        return (tuple(v[i] for v in per_layer.values()) + tuple(i in v for v in index_lists.values())
                + tuple(i < t for t in thresholds.values()) + tuple(i >= t for t in tails.values())
                + (repr(plc.get(i)),))

    groups: dict[tuple, list[int]] = {}
    for i in range(n0):
        groups.setdefault(signature(i), []).append(i)
    # the first layer of every kind, then round-robin over the kinds (deepseek_v3's 3 dense + 58 MoE
    # layers give dense, dense, MoE, MoE rather than 3 dense and 1 MoE)
    keep, rank = [], 0
    while len(keep) < max(n_new, len(groups)) and len(keep) < n0:
        for members in groups.values():
            if rank < len(members) and (len(keep) < n_new or rank == 0):
                keep.append(members[rank])
        rank += 1
    return sorted(keep[:max(n_new, min(len(groups), MAX_LAYERS))])


def _has_pattern(d: dict, n0: int | None) -> bool:
    if n0 is None:
        return False
    per_layer, index_lists = _layer_lists(d, n0)
    if per_layer or index_lists or _per_layer_config(d):
        return True
    return any(_PATTERN_HINT.search(k) and v not in (None, False, 0, [], "") for k, v in d.items())


def _scalar_rule(k: str, v: Any, n_layers: int, vocab_size: int) -> Any:
    """The shrunk value of one integer config entry (``v`` itself when no rule applies)."""
    if k in _LAYER_KEYS:
        return min(v, n_layers) if v > 0 else v
    if k in _HIDDEN_KEYS:
        return HIDDEN
    if k in _HEAD_KEYS:
        return HEADS
    if k in _KV_HEAD_KEYS:
        return KV_HEADS if v > 1 else v
    if k in _HEAD_DIM_KEYS:
        return HEAD_DIM
    if k in _INTERMEDIATE_KEYS:
        return INTERMEDIATE
    if k in _MOE_INTERMEDIATE_KEYS:
        return MOE_INTERMEDIATE if v > 0 else v
    if k in _EXPERT_KEYS:
        return EXPERTS if v > 1 else v
    if k in _TOPK_KEYS:
        return min(v, TOP_K)
    if k in _POSITION_KEYS:
        return max(256, min(v, MAX_POSITIONS))
    if k in _WINDOW_KEYS:
        return WINDOW
    if k in _SMALL:
        return _SMALL[k]
    if k in _VOCAB_KEYS:
        return vocab_size
    if k.endswith("_period"):
        return min(v, 2)
    if k.endswith("_offset") and "layer" in k:
        return min(v, 1)
    return v


def _shrink_dict(d: dict, vocab_size: int, *, text: bool) -> dict:
    """Shrink one (sub-)config dict in place and return it."""
    d0 = copy.deepcopy(d)
    n0 = _num_layers(d)
    n_new = PATTERN_LAYERS if _has_pattern(d, n0) else PLAIN_LAYERS
    keep = None
    if n0 is not None:
        keep = _choose_layers(d, n0, n_new) if n0 > n_new else list(range(n0))
        n_new = len(keep)
        per_layer, index_lists = _layer_lists(d, n0)
        for k, v in per_layer.items():
            d[k] = [v[i] for i in keep]
            if all(_is_int(x) for x in d[k]) and k not in _NO_ELEMENTWISE:
                # per-layer sizes (gemma3n's intermediate_size, laguna's heads per layer): shrink each,
                # a value that differs from the most common one stays different (twice as large)
                common = max(set(v), key=v.count)
                base = _scalar_rule(k, common, n_new, vocab_size)
                d[k] = [base if x == common else (lambda nx: 2 * nx if nx == base else nx)(_scalar_rule(k, x, n_new, vocab_size))
                        for x in d[k]]
        for k, v in index_lists.items():
            d[k] = [j for j, i in enumerate(keep) if i in v]
        for k in _THRESHOLD_KEYS:
            if _is_int(d.get(k)):
                d[k] = sum(i < d[k] for i in keep)
        for k in _TAIL_KEYS:
            if _is_int(d.get(k)) and d[k] > 0:
                d[k] = sum(i >= n0 - d[k] for i in keep)
    for k, v in list(d.items()):
        if _is_config_dict(v):
            sub_text = text and ("text" in k or "decoder" in k or k in ("encoder", "global_config"))
            _shrink_dict(v, vocab_size, text=sub_text or "vocab_size" in v)
        elif isinstance(v, dict) and k in ("attn_config", "ffn_config"):
            _shrink_dict(v, vocab_size, text=False)
        elif k in _NONE_KEYS:
            d[k] = None
        elif k == "depths" and isinstance(v, list) and all(_is_int(x) for x in v):
            d[k] = [1] * len(v)  # convolutional stages (vibevoice's audio tokenizers): one block each
        elif _is_int(v):
            d[k] = _scalar_rule(k, v, n_new, vocab_size)
    # a top-k left None next to several experts (deepseek_v2's default) would crash the router
    if any(_is_int(d.get(k)) and d[k] > 1 for k in _EXPERT_KEYS):
        for k in _TOPK_KEYS:
            if k in d and d[k] is None:
                d[k] = TOP_K
    # MLA (kv_lora_rank): keys are expanded per query head, the configs need kv heads == heads
    if d.get("kv_lora_rank") and _is_int(d.get("num_key_value_heads")) and _is_int(d.get("num_attention_heads")):
        d["num_key_value_heads"] = d["num_attention_heads"]
    # a head_dim / kv heads of None that nothing derives (ministral, hunyuan, nemotron) would crash
    if "head_dim" in d and d["head_dim"] is None and _is_int(d.get("num_attention_heads")):
        d["head_dim"] = HEAD_DIM
    if "num_key_value_heads" in d and d["num_key_value_heads"] is None and _is_int(d.get("num_attention_heads")):
        d["num_key_value_heads"] = KV_HEADS
    # rotary embeddings use head_dim, which MLA configs tie to qk_rope_head_dim (longcat_flash)
    if _is_int(d.get("qk_rope_head_dim")) and d0.get("head_dim") == d0.get("qk_rope_head_dim"):
        d["head_dim"] = d["qk_rope_head_dim"]
    # mamba2: num_heads * head_dim must equal expand * hidden_size
    if all(_is_int(d.get(k)) for k in ("num_heads", "head_dim", "expand", "hidden_size")) and "state_size" in d:
        d["num_heads"] = d["expand"] * d["hidden_size"] // d["head_dim"]
    # sliding window switched off by a flag (qwen2 family, smollm3) or by max_window_layers >= all
    # layers (dots1): switch it on for half the layers
    # (max_window_layers) and let __post_init__ derive layer_types again, so that the small window
    # bites and both sliding and full layers appear
    all_full = isinstance(d0.get("layer_types"), list) and set(d0["layer_types"]) == {"full_attention"}
    if n0 is not None and "sliding_window" in d and (
            d0.get("use_sliding_window") is False
            or (all_full and _is_int(d0.get("max_window_layers")) and _is_int(d0.get("sliding_window")))):
        d["use_sliding_window"] = True
        d["sliding_window"] = WINDOW
        if _is_int(d.get("max_window_layers")):
            d["max_window_layers"] = max(1, n_new // 2)
        if "layer_types" in d:
            d["layer_types"] = None
    # heterogeneous per-layer overrides: keep the kept layers' overrides (renumbered), shrunk; a
    # value that differed from the global default stays different (twice the shrunk global value)
    plc = _per_layer_config(d0)
    if plc is not None and keep is not None:
        new_plc = {}
        for j, i in enumerate(keep):
            if i not in plc:
                continue
            over = {}
            for k, v in plc[i].items():
                if _is_int(v):
                    nv = _scalar_rule(k, v, n_new, vocab_size)
                    if v != d0.get(k) and nv == d.get(k):
                        nv = 2 * nv
                    over[k] = nv
                else:
                    over[k] = copy.deepcopy(v)
            if plc[i].get("num_key_value_heads") == plc[i].get("num_attention_heads") and "num_attention_heads" in over:
                over["num_key_value_heads"] = over["num_attention_heads"]  # MHA / MLA layers stay so
            new_plc[str(j)] = over
        d["per_layer_config"] = new_plc
    if text:
        if "vocab_size" in d:
            d["vocab_size"] = vocab_size
        for k, v in list(d.items()):
            if k.endswith("token_id") and _is_int(v) and v >= vocab_size:
                d[k] = {"pad_token_id": 0, "bos_token_id": 1, "decoder_start_token_id": 2}.get(k, 3)
        if "is_decoder" in d and not d.get("is_encoder_decoder"):
            d["is_decoder"] = True
    return d


def _model_class(entry: ZooEntry):
    import transformers

    return getattr(transformers, entry.class_name)


def _default_config(entry: ZooEntry):
    from transformers import AutoConfig

    return AutoConfig.for_model(entry.model_type)


_KEEP_EXPLICIT = _KV_HEAD_KEYS | _WINDOW_KEYS | {"head_dim"}  # derived by default, but we want our value
_ALWAYS_KEEP = {"model_type", "per_layer_config"}


def _sub_config_class(spec: Any, sub: dict):
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    cls = getattr(spec, "config_class", spec)
    if cls is AutoConfig or cls is None:
        return CONFIG_MAPPING.get(sub.get("model_type")) if sub.get("model_type") in CONFIG_MAPPING else None
    return cls


@functools.lru_cache(maxsize=None)
def _generic_keys() -> frozenset[str]:
    """Keys every config has (token ids, is_decoder, tie_word_embeddings, ...): never dropped."""
    from transformers import PreTrainedConfig

    return frozenset(PreTrainedConfig().to_dict())


def _rederive(d: dict, d0: dict, cls) -> None:
    """Let the config class re-derive what it derives from the (shrunk) primary values: drop the
    model-specific to_dict entries that are not dataclass fields (set by __post_init__, e.g. MLA's
    head_dim and qk_head_dim, zamba2's mamba_headdim), and reset the fields whose class default is
    None / "auto" but whose value in the default config was derived (bamba's mamba_d_head, xlnet's
    d_head, ...). ``d0`` is the default config's dict."""
    import dataclasses

    if cls is None or not dataclasses.is_dataclass(cls):
        return
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    generic = _generic_keys()
    aliases = set(getattr(cls, "attribute_map", {}) or {}) | set((getattr(cls, "attribute_map", {}) or {}).values())
    for k in list(d):
        if k in _ALWAYS_KEEP or k in generic or k in aliases or k.endswith("token_id"):
            continue
        if k not in fields:
            del d[k]
        elif (fields[k] in (None, "auto") and d0.get(k) not in (None, "auto") and k not in _KEEP_EXPLICIT
              and not isinstance(d0.get(k), (dict, list))):
            d[k] = fields[k]
    for k, spec in (getattr(cls, "sub_configs", None) or {}).items():
        if isinstance(d.get(k), dict) and isinstance(d0.get(k), dict):
            _rederive(d[k], d0[k], _sub_config_class(spec, d[k]))


def _set_everywhere(d: dict, key: str, value: Any) -> None:
    """Set ``key`` in a config dict and all its sub-config dicts that have it."""
    if key in d:
        d[key] = value
    for v in d.values():
        if _is_config_dict(v):
            _set_everywhere(v, key, value)


def tiny_config(entry: ZooEntry, vocab_size: int = 512):
    """The shrunk config of ``entry`` (see module docstring), of the class the model class takes."""
    from huggingface_hub.errors import StrictDataclassFieldValidationError
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    default = _default_config(entry)
    d0 = default.to_dict()
    d = _shrink_dict(copy.deepcopy(d0), vocab_size, text=True)
    if entry.kind == "seq2seq" and d.get("is_encoder_decoder") and d.get("decoder_start_token_id") is None:
        d["decoder_start_token_id"] = d.get("pad_token_id") or 0
    cls = CONFIG_MAPPING[entry.model_type]
    _rederive(d, d0, cls)
    for k, v in _OVERRIDES.get(entry.model_type, {}).items():
        target = d
        *path, leaf = k.split(".")
        for p in path:
            target = target[p]
        target[leaf] = copy.deepcopy(v)
    d["dtype"] = "float32"
    try:
        config = cls.from_dict(d)
    except StrictDataclassFieldValidationError as e:
        if "eos_token_id" not in str(e):
            raise
        # eos must be an id here: the last one, which a random model is unlikely to pick
        _set_everywhere(d, "eos_token_id", vocab_size - 1)
        config = cls.from_dict(d)
    # a model class may take a sub-config (MusicgenForCausalLM: the decoder's, Qwen3_5ForCausalLM: the text one)
    wanted = getattr(_model_class(entry), "config_class", None)
    if wanted is not None and not isinstance(config, wanted):
        subs = [config.get_text_config(decoder=True)] + [getattr(config, k, None) for k in getattr(config, "sub_configs", {})]
        config = next((c for c in subs if isinstance(c, wanted)), config)
    return config


def build_tiny(entry: ZooEntry, vocab_size: int = 512, seed: int = 0) -> torch.nn.Module:
    """A tiny random-weight model of ``entry``'s class: eval mode, float32, CPU, seeded weights."""
    if entry.skip_reason is not None:
        raise ValueError(f"{entry.model_type} ({entry.kind}) is not buildable: {entry.skip_reason}")
    config = tiny_config(entry, vocab_size)
    cls = _model_class(entry)
    torch.manual_seed(seed)
    model = cls(config)
    if hasattr(model, "set_default_language") and getattr(config, "languages", None):
        model.set_default_language(config.languages[0])  # X-MOD: adapters are per language
    return model.to(torch.float32).eval()


def zoo_entries() -> list[ZooEntry]:
    """Every model_type of the causal-LM and seq2seq-LM auto mappings, sorted by (model_type, kind)."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)

    entries = {}
    for kind, mapping in (("causal", MODEL_FOR_CAUSAL_LM_MAPPING_NAMES), ("seq2seq", MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)):
        for model_type, class_name in mapping.items():
            if isinstance(class_name, (list, tuple)):
                class_name = class_name[0]
            entries[(model_type, kind)] = ZooEntry(model_type, class_name, kind, _skip_reason(model_type, class_name, kind))
    return [entries[k] for k in sorted(entries)]


def _backend_checks() -> dict[str, list[tuple[str, Any]]]:
    """Sub-model classes whose code needs optional packages: class name -> [(package, is_available)]."""
    from transformers.utils import is_timm_available, is_vision_available

    return {"TimmWrapperModel": [("timm", is_timm_available), ("Pillow", is_vision_available)]}


def _config_model_types(d: dict) -> set[str]:
    types = {d.get("model_type")}
    for v in d.values():
        if _is_config_dict(v):
            types |= _config_model_types(v)
    return types


@functools.lru_cache(maxsize=None)
def _skip_reason(model_type: str, class_name: str, kind: str) -> str | None:
    """The hand-checked ``_SKIPS`` reason, else a missing optional package of a sub-model, else None."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    if (model_type, kind) in _SKIPS:
        return _SKIPS[(model_type, kind)]
    if not getattr(CONFIG_MAPPING[model_type], "sub_configs", None):
        return None  # not composite: nothing but its own modeling file
    try:
        sub_types = _config_model_types(_default_config(ZooEntry(model_type, class_name, kind, None)).to_dict())
    except Exception:  # noqa: BLE001 -- a config that cannot even be listed is left to build_tiny to report
        return None
    checks = _backend_checks()
    for sub_type in sorted(t for t in sub_types if t):
        sub_class = MODEL_MAPPING_NAMES.get(sub_type)
        missing = [name for name, available in checks.get(sub_class, []) if not available()]
        if missing:
            return f"optional dependency missing: {' and '.join(missing)} (its {sub_type} sub-model is a {sub_class})"
    return None
