"""Local Hugging Face model folders (``config.json`` + weights + tokenizer files): checked with
errors that say what is missing, and loaded offline (``local_files_only``) by a picklable
:class:`ModelDirLoader` — what the command line and the Ray workers use. Nothing here downloads."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.bin", "*.pt", "tf_model.h5", "flax_model.msgpack")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "vocab.txt")
DTYPES = ("auto", "float32", "bfloat16", "float16")


class ModelDirError(ValueError):
    """A model folder that does not exist or is not a Hugging Face model folder."""


def check_model_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path when it is a folder with ``config.json``, weights and tokenizer files;
    else :class:`ModelDirError` naming what is missing."""
    folder = Path(path)
    if not folder.exists():
        raise ModelDirError(f"model folder {os.fspath(path)} does not exist")
    if not folder.is_dir():
        raise ModelDirError(f"{os.fspath(path)} is not a folder; pass a Hugging Face model folder (config.json, weights, tokenizer)")
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any(next(folder.glob(p), None) is not None for p in WEIGHT_PATTERNS):
        missing.append("weights (*.safetensors or pytorch_model*.bin)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json or tokenizer_config.json)")
    if missing:
        raise ModelDirError(f"{os.fspath(path)} is not a Hugging Face model folder: no {', no '.join(missing)}")
    return folder


def load_tokenizer(path: str | os.PathLike[str]) -> Any:
    """The folder's tokenizer, offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.fspath(check_model_dir(path)), local_files_only=True)


@dataclass(frozen=True)
class ModelDirLoader:
    """A zero-argument, picklable loader of a local model folder: ``ModelDirLoader("m/")()`` is
    ``(model, tokenizer)``, loaded with transformers offline (``local_files_only=True``), in eval
    mode, on ``device`` (default: ``cuda`` when a GPU is visible — a Ray worker sees the one it was
    given — else ``cpu``).

    ``model_name`` is the folder exactly as given, which is also the loaded model's
    ``config.name_or_path``: the name ``analyze_many`` puts in its trace file keys, so runs through
    this loader, through ``analyze_many(AutoModelForCausalLM.from_pretrained(model_dir))`` and through
    the command line (same folder string) share their trace files.
    """

    model_dir: str
    dtype: str = "auto"
    device: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_dir", os.fspath(self.model_dir))
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    @property
    def model_name(self) -> str:
        return self.model_dir

    def __call__(self) -> tuple[Any, Any]:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

        check_model_dir(self.model_dir)
        config = AutoConfig.from_pretrained(self.model_dir, local_files_only=True)
        cls = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        dtype = self.dtype if self.dtype == "auto" else getattr(torch, self.dtype)
        model = cls.from_pretrained(self.model_dir, dtype=dtype, local_files_only=True)
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = model.to(device).eval()
        return model, load_tokenizer(self.model_dir)
