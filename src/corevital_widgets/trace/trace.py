"""The Trace: everything one instrumented generation recorded, as numpy arrays (no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np

from .groups import Attention, Heads, Layers, Prompt, Timeline
from .health import DEFAULT_THRESHOLDS, Health, Thresholds, compute_health
from .sparse import SparseAttention

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Version of the Trace layout; bumped on any change of fields, shapes or file format.
SCHEMA_VERSION = 2


@dataclass(eq=False)
class Trace:
    """What happened inside a model during one generation (batch size 1).

    Shapes: T generated steps, L layers, H heads, P prompt tokens, K top-k alternatives.
    ``top_k_tokens`` [T][K] are the decoded pieces of ``timeline.top_k_ids`` (for hover text).
    ``meta`` holds the model name and architecture, L/H/hidden size, dtype, device, generation
    parameters, timings (seconds) and library versions.
    """

    meta: dict[str, Any]
    prompt_ids: np.ndarray
    prompt_tokens: list[str]
    generated_ids: np.ndarray
    generated_tokens: list[str]
    timeline: Timeline
    layers: Layers
    attention: Attention
    heads: Heads
    prompt: Prompt
    sparse: SparseAttention
    top_k_tokens: list[list[str]] = field(default_factory=list)
    health: Health = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.prompt_ids = np.ascontiguousarray(self.prompt_ids, dtype=np.int32)
        self.generated_ids = np.ascontiguousarray(self.generated_ids, dtype=np.int32)
        self.prompt_tokens = [str(t) for t in self.prompt_tokens]
        self.generated_tokens = [str(t) for t in self.generated_tokens]
        self.top_k_tokens = [[str(t) for t in row] for row in self.top_k_tokens]
        if self.health is None:
            self.health = compute_health(self.timeline, self.layers, self.attention, self.thresholds, self.generated_ids,
                                         self.n_prompt)

    # ------------------------------------------------------------------ dimensions
    @property
    def n_steps(self) -> int:
        """T, the number of generated tokens."""
        return int(self.generated_ids.size)

    @property
    def n_prompt(self) -> int:
        """P, the number of prompt tokens."""
        return int(self.prompt_ids.size)

    @property
    def n_layers(self) -> int:
        """L, decoder layers (the per-step arrays)."""
        return int(self.meta["num_layers"])

    @property
    def n_heads(self) -> int:
        """H, attention heads per layer."""
        return int(self.meta["num_heads"])

    @property
    def attention_layers(self) -> list[int]:
        """Decoder layers with softmax attention (all of them, except in hybrid stacks whose
        state-space / linear-attention / convolution blocks have none: their attention metrics
        are NaN and views show "no attention")."""
        return [int(i) for i in self.meta.get("attention_layers", range(self.n_layers))]

    @property
    def prompt_attention_layers(self) -> list[int]:
        """Layers of the prompt stack (the encoder for encoder-decoders) with softmax attention."""
        n = int(self.meta.get("num_prompt_layers", self.n_layers))
        return [int(i) for i in self.meta.get("prompt_attention_layers", range(n))]

    def _prompt_layer(self, layer: int | None) -> int | list[int] | None:
        """The layer argument of a sparse query: a layer without attention is an error; all
        layers (None) means every layer that has attention."""
        att = self.prompt_attention_layers
        n = self.sparse.shape[0]
        if layer is None:
            return None if len(att) == n else att
        if 0 <= int(layer) < n and int(layer) not in att:
            raise ValueError(f"layer {layer} has no softmax attention (a state-space, linear-attention or convolution "
                             f"block of a hybrid stack); layers with attention: {att}")
        return layer

    @property
    def thresholds(self) -> Thresholds:
        """The thresholds the flags and head counts were computed with."""
        return Thresholds(**self.meta.get("thresholds", {})) if self.meta.get("thresholds") else DEFAULT_THRESHOLDS

    @property
    def text(self) -> str:
        """The generated text (pieces joined)."""
        return "".join(self.generated_tokens)

    def with_thresholds(self, thresholds: Thresholds) -> Health:
        """Re-evaluate the health flags under other thresholds (the trace is unchanged)."""
        return compute_health(self.timeline, self.layers, self.attention, thresholds, self.generated_ids, self.n_prompt)

    # ---------------------------------------------------------------- sparse queries
    def attends_to(self, token: int, layer: int | None = None, head: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Prompt keys that prompt position ``token`` attends to: (keys, weights).

        One stored row when ``layer`` and ``head`` are given; the mean over all layers and/or
        heads when either is None (dropped entries count as 0). Weights are attention
        probabilities, float32; keys ascend.
        """
        return self.sparse.attends_to(token, self._prompt_layer(layer), head)

    def attended_by(self, token: int, layer: int | None = None, head: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Prompt queries that attend to prompt position ``token``: (queries, weights)."""
        return self.sparse.attended_by(token, self._prompt_layer(layer), head)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | PathLike[str], level: int | None = None) -> int:
        """Write the trace to one compressed, checksummed file, atomically. Returns its size in
        bytes. ``level``: the zstd level, 1-22 (default 12: small files; dataset runs save at 3,
        about four times faster for 3-4% more bytes)."""
        from .storage import save_trace

        return save_trace(self, path, level)

    def to_bytes(self) -> bytes:
        """The file format as bytes (what :meth:`save` writes)."""
        from .storage import trace_to_bytes

        return trace_to_bytes(self)

    def to_json(self, *, include_sparse: bool = False) -> str:
        """Compact JSON of the trace (see :mod:`corevital_widgets.trace.export`)."""
        from .export import trace_to_json

        return trace_to_json(self, include_sparse=include_sparse)

    def to_pandas(self, kind: str = "steps") -> "pd.DataFrame":
        """A tidy DataFrame: ``"steps"`` (one row per step), ``"layers"`` (step x layer),
        ``"heads"`` (step x layer x head) or ``"prompt"`` (one row per prompt token)."""
        from .export import trace_to_pandas

        return trace_to_pandas(self, kind)

    def features(self) -> dict[str, float]:
        """Named scalar features of the run (see :mod:`corevital_widgets.analysis.features`)."""
        from ..analysis.features import trace_features  # the one door upward: analysis, lazily

        return trace_features(self)

    def chart(self, metric: str = "entropy") -> Any:
        """A static ``altair.Chart`` of one metric: a timeline curve over steps, or a per-layer
        profile for layer metrics (see :func:`corevital_widgets.trace.charts.trace_chart`)."""
        from .charts import trace_chart

        return trace_chart(self, metric)

    def summary(self) -> str:
        """A readable multi-line report: the verdict and its narrative, tokens, per-step metrics,
        health facts and where flags fired, layer blame."""
        from ..analysis.summary import trace_summary

        return trace_summary(self)

    def verdict(self, baseline: Any = "auto", alpha: float = 0.05) -> Any:
        """Green / yellow / red against the model's own normal, with layer blame and a narrative
        (see :func:`corevital_widgets.analysis.verdict.assess`; ``baseline="auto"`` finds the
        shipped or registered baseline of this model by fingerprint)."""
        from ..analysis.verdict import assess

        return assess(self, baseline, alpha)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trace):
            return NotImplemented
        return (
            self.meta == other.meta
            and np.array_equal(self.prompt_ids, other.prompt_ids)
            and np.array_equal(self.generated_ids, other.generated_ids)
            and self.prompt_tokens == other.prompt_tokens
            and self.generated_tokens == other.generated_tokens
            and self.top_k_tokens == other.top_k_tokens
            and self.timeline == other.timeline and self.layers == other.layers
            and self.attention == other.attention and self.heads == other.heads
            and self.prompt == other.prompt and self.sparse == other.sparse
            and self.health == other.health
        )

    def __repr__(self) -> str:
        return (
            f"<Trace {self.meta.get('model_name', '?')}: P={self.n_prompt} T={self.n_steps} "
            f"L={self.n_layers} H={self.n_heads} sparse={self.sparse.nnz} entries, health={self.health.verdict}>"
        )
