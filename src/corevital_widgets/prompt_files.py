"""Prompts for many-prompt runs: a list of strings, a pandas DataFrame with a ``prompt`` column, or
a JSONL (``{"prompt": ...}`` per line) / Parquet file, local or an fsspec URL. Errors name the
file, the line and what is wrong."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
COLUMN = "prompt"


class PromptFileError(ValueError):
    """A prompts file that is missing, empty or malformed (the message names the line)."""


def _is_url(text: str) -> bool:
    return "://" in text


def _suffix(text: str) -> str:
    return Path(text.split("?", 1)[0]).suffix.lower()


def is_prompt_file(source: Any) -> bool:
    """Whether ``source`` names a prompts file (by its suffix) rather than being prompts."""
    return isinstance(source, (str, os.PathLike)) and _suffix(os.fspath(source)) in (*JSONL_SUFFIXES, *PARQUET_SUFFIXES)


def _open_text(path: str):
    if _is_url(path):
        import fsspec

        return fsspec.open(path, "rt", encoding="utf-8").open()
    if not Path(path).exists():
        raise PromptFileError(f"prompts file {path} does not exist")
    if not Path(path).is_file():
        raise PromptFileError(f"{path} is not a file; pass a .jsonl file with one {{\"prompt\": ...}} per line")
    return open(path, encoding="utf-8")


def read_jsonl(path: str | os.PathLike[str]) -> list[str]:
    """The ``prompt`` of every line of a JSONL file; blank lines are skipped."""
    path = os.fspath(path)
    prompts: list[str] = []
    with _open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise PromptFileError(f"{path} line {number}: not valid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(obj, dict):
                raise PromptFileError(f"{path} line {number}: expected an object like {{\"prompt\": \"...\"}}, got a {type(obj).__name__}")
            if COLUMN not in obj:
                keys = ", ".join(map(repr, obj)) or "none"
                raise PromptFileError(f"{path} line {number}: no \"prompt\" key (keys: {keys})")
            value = obj[COLUMN]
            if not isinstance(value, str):
                raise PromptFileError(f"{path} line {number}: \"prompt\" is a {type(value).__name__}, not a string")
            if not value.strip():
                raise PromptFileError(f"{path} line {number}: \"prompt\" is empty")
            prompts.append(value)
    if not prompts:
        raise PromptFileError(f"{path} has no prompts (expected one {{\"prompt\": ...}} object per line)")
    return prompts


def _from_frame(df: Any, where: str) -> list[str]:
    if COLUMN not in df.columns:
        raise PromptFileError(f"{where} has no \"prompt\" column (columns: {', '.join(map(str, df.columns))})")
    prompts = list(df[COLUMN])
    for i, value in enumerate(prompts):
        if not isinstance(value, str):
            raise PromptFileError(f"{where} row {i}: \"prompt\" is a {type(value).__name__}, not a string")
        if not value.strip():
            raise PromptFileError(f"{where} row {i}: \"prompt\" is empty")
    if not prompts:
        raise PromptFileError(f"{where} has no prompts")
    return prompts


def read_parquet(path: str | os.PathLike[str]) -> list[str]:
    """The ``prompt`` column of a Parquet file (or folder of files), in order."""
    import pandas as pd

    path = os.fspath(path)
    if not _is_url(path) and not Path(path).exists():
        raise PromptFileError(f"prompts file {path} does not exist")
    try:
        df = pd.read_parquet(path, columns=[COLUMN])
    except ImportError as err:
        raise PromptFileError(f"reading {path} needs pyarrow ({err}); pip install pyarrow") from None
    except (KeyError, ValueError, OSError) as err:
        raise PromptFileError(f"could not read a \"prompt\" column from {path}: {err}") from None
    return _from_frame(df, path)


def read_prompts(source: Any) -> list[str]:
    """``source`` as a list of prompt strings: a path/URL of a ``.jsonl`` or ``.parquet`` file, a
    pandas DataFrame with a ``prompt`` column, or an iterable of strings (returned as a list)."""
    if is_prompt_file(source):
        text = os.fspath(source)
        return read_parquet(text) if _suffix(text) in PARQUET_SUFFIXES else read_jsonl(text)
    if isinstance(source, (str, os.PathLike)):
        raise TypeError("prompts must be a list of strings, a DataFrame with a 'prompt' column, or the path of a "
                        f".jsonl / .parquet file; got the string {os.fspath(source)[:60]!r}")
    if hasattr(source, "columns") and hasattr(source, "__getitem__"):
        return _from_frame(source, "the DataFrame")
    return source if isinstance(source, list) else list(source)
