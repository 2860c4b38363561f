"""The column groups a Trace is made of: plain numpy arrays, no torch.

Shapes: T generated steps, L layers, H heads, P prompt tokens, K top-k alternatives.
Units: entropy and surprisal in bits, perplexity = 2**entropy, probabilities in [0, 1].
Per generation step t every value describes the position whose output distribution produced
token t (step 0 is the last prompt position).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np


class _Group:
    """Shared behaviour of the column groups: named arrays with fixed dtypes."""

    #: dtype of every field, in declaration order.
    _dtypes: dict[str, str] = {}

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            want = self._dtypes.get(f.name)
            value = getattr(self, f.name)
            if want is not None:
                object.__setattr__(self, f.name, np.ascontiguousarray(value, dtype=want))

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array of the group by field name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        a, b = self.arrays(), other.arrays()  # type: ignore[attr-defined]
        return all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a)


@dataclass(eq=False)
class Timeline(_Group):
    """Output-distribution metrics per generated step, shape [T] unless noted.

    entropy: bits, 0..log2(V). top_k_margin: p(1) - p(2). voter_agreement: summed probability
    of the top-k tokens (k = ``meta['top_k']``, default 10). max_prob: p(1). perplexity: 2**entropy.
    surprisal: -log2 p(chosen token), bits. top_k_ids / top_k_probs [T, K]: the k most likely
    tokens and their probabilities. logits_has_nan / logits_has_inf: any non-finite logit.
    repetition_similarity: min over the previous 3 steps of the cosine similarity of the
    final-layer hidden state of this step with that step (NaN for the first 3 steps).
    """

    entropy: np.ndarray
    top_k_margin: np.ndarray
    voter_agreement: np.ndarray
    max_prob: np.ndarray
    perplexity: np.ndarray
    surprisal: np.ndarray
    top_k_ids: np.ndarray
    top_k_probs: np.ndarray
    logits_has_nan: np.ndarray
    logits_has_inf: np.ndarray
    repetition_similarity: np.ndarray

    _dtypes = {
        "entropy": "float32", "top_k_margin": "float32", "voter_agreement": "float32",
        "max_prob": "float32", "perplexity": "float32", "surprisal": "float32",
        "top_k_ids": "int32", "top_k_probs": "float16", "logits_has_nan": "bool",
        "logits_has_inf": "bool", "repetition_similarity": "float32",
    }


#: Labels and units of the per-step output-distribution metrics (Timeline fields), used by
#: the static charts and the token timeline widget alike: field -> (label, unit).
TIMELINE_METRICS: dict[str, tuple[str, str]] = {
    "entropy": ("entropy", "bits"),
    "surprisal": ("surprisal", "bits"),
    "top_k_margin": ("margin p1 − p2", "probability"),
    "voter_agreement": ("top-k mass", "probability"),
    "perplexity": ("perplexity", "choices (2^bits)"),
    "max_prob": ("max probability", "probability"),
}


@dataclass(eq=False)
class Layers(_Group):
    """Hidden-state summaries per step and layer, shape [T, L].

    Taken at the step's position from the L layer outputs (transformers' ``hidden_states[1:]``;
    the last one is the model's final-normed ``last_hidden_state``). l2_norm: Euclidean norm;
    std / mean: population std and mean over the hidden dimension (same units as the
    activations); has_nan / has_inf: any non-finite element.

    Logit lens (only with ``analyze(..., logit_lens=True)``; else shape (0, 0)): lens_entropy,
    bits, and lens_top1, token id, of the next-token distribution decoded from each layer's
    hidden state through the model's final norm and unembedding. The last layer's lens is the
    model's own output distribution.
    """

    l2_norm: np.ndarray
    std: np.ndarray
    mean: np.ndarray
    has_nan: np.ndarray
    has_inf: np.ndarray
    lens_entropy: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    lens_top1: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))

    _dtypes = {"l2_norm": "float32", "std": "float32", "mean": "float32", "has_nan": "bool", "has_inf": "bool",
               "lens_entropy": "float32", "lens_top1": "int32"}


@dataclass(eq=False)
class Attention(_Group):
    """Per-layer aggregates over heads of the step's attention row, shape [T, L].

    entropy_*: bits over the row's keys. concentration_*: the largest weight in a head's row.
    collapsed_head_count: heads with entropy < 0.1 bits; focused_head_count: heads with
    concentration > 0.9. score_variance_max: the largest over heads of the variance of the
    pre-softmax scores of the row. has_nan / has_inf: any non-finite attention weight.
    """

    entropy_mean: np.ndarray
    entropy_min: np.ndarray
    entropy_max: np.ndarray
    concentration_max: np.ndarray
    concentration_min: np.ndarray
    collapsed_head_count: np.ndarray
    focused_head_count: np.ndarray
    score_variance_max: np.ndarray
    has_nan: np.ndarray
    has_inf: np.ndarray

    _dtypes = {
        "entropy_mean": "float32", "entropy_min": "float32", "entropy_max": "float32",
        "concentration_max": "float32", "concentration_min": "float32",
        "collapsed_head_count": "int16", "focused_head_count": "int16",
        "score_variance_max": "float32", "has_nan": "bool", "has_inf": "bool",
    }


@dataclass(eq=False)
class Heads(_Group):
    """Per-head attention of the step's row, shape [T, L, H], float16.

    entropy: bits; concentration: largest weight of the row.
    """

    entropy: np.ndarray
    concentration: np.ndarray

    _dtypes = {"entropy": "float16", "concentration": "float16"}


@dataclass(eq=False)
class Prompt(_Group):
    """Prompt telemetry, from the generation's own prefill (causal LM) or encoder pass.

    surprisal [P-1]: bits, -log2 p(prompt token i+1 | tokens <= i); NaN for encoder-decoder
    models (an encoder has no next-token distribution). layer_transformation [L, P]:
    1 - cos(h_l, h_{l-1}) per token, the embedding output being layer 0. head_entropy [L, H]:
    bits, mean over the P query rows. head_concentration [L, H]: mean over rows of the row's
    largest weight. sink [L, H]: mean attention to the first token. basin [L, H]: mean mass on
    the middle third of keys over the mean mass on the other keys (< 0.3 ignores the middle).
    All empty (shape (0, …)) when the trace was made with ``prompt_telemetry=False``.
    """

    surprisal: np.ndarray
    layer_transformation: np.ndarray
    head_entropy: np.ndarray
    head_concentration: np.ndarray
    sink: np.ndarray
    basin: np.ndarray

    _dtypes = {
        "surprisal": "float32", "layer_transformation": "float32", "head_entropy": "float32",
        "head_concentration": "float32", "sink": "float32", "basin": "float32",
    }
