"""`corevital analyze` and `corevital batch` on a local model folder: the files they write, one-line
errors with exit status 2, and a batch interrupted with Ctrl-C that resumes where it stopped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from corevital_widgets import load_trace
from corevital_widgets.batch import MANIFEST_NAME, TRACE_SUFFIX, TraceSet, analyze_many, prompt_key
from corevital_widgets.cli import main

from .trace_helpers import file_stamps, one_torch_thread, trace_files  # noqa: F401 (a fixture)

N_PROMPTS = 40
PROMPTS = [f"Question {i}: what is {i} plus {i + 1}? Answer:" for i in range(N_PROMPTS)]


def _jsonl(path: Path, prompts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(prompts)))
    return path


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here traces with one torch thread (trace_helpers.one_torch_thread)."""


def _chat(folder: Path, text: str) -> str:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def test_analyze_writes_trace_and_page(tiny_llama_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    out, html = tmp_path / "o" / "run.cvtrace", tmp_path / "o" / "run.html"
    rc = main(["analyze", str(tiny_llama_dir), "--prompt", "Why is the sky blue?", "--chat", "--max-new-tokens", "5",
               "--out", str(out), "--html", str(html)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "verdict:" in captured.out and f"wrote {out}" in captured.err
    trace = load_trace(out)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompt = _chat(tiny_llama_dir, "Why is the sky blue?")
    assert prompt.endswith("assistant:") and np.array_equal(trace.prompt_ids, tok(prompt)["input_ids"])
    assert trace.n_steps == 5 and trace.meta["model_name"] == str(tiny_llama_dir)
    assert html.stat().st_size > 10_000 and "<html" in html.read_text()[:1000].lower()


def _error_cases(folder: Path, tmp: Path) -> list[tuple[list[str], str]]:
    good = _jsonl(tmp / "good.jsonl", ["a", "b"])
    bad = tmp / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n\n{"prompt": "b",}\n')
    no_key = tmp / "nokey.jsonl"
    no_key.write_text('{"prompt": "a"}\n{"text": "b"}\n')
    empty = tmp / "empty.jsonl"
    empty.write_text("")
    not_model = tmp / "not_model"
    not_model.mkdir()
    (not_model / "readme.txt").write_text("hi")
    no_chat = tmp / "no_chat"
    shutil.copytree(folder, no_chat)
    (no_chat / "chat_template.jinja").unlink()
    cfg = json.loads((no_chat / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (no_chat / "tokenizer_config.json").write_text(json.dumps(cfg))
    out = str(tmp / "runs")
    return [
        (["analyze", str(tmp / "nope"), "--prompt", "hi"], f"model folder {tmp / 'nope'} does not exist"),
        (["batch", str(tmp / "nope"), str(good), "--out", out], "does not exist"),
        (["analyze", str(not_model), "--prompt", "hi"], "is not a Hugging Face model folder: no config.json, no weights"),
        (["analyze", str(good), "--prompt", "hi"], "is not a folder"),
        (["batch", str(folder), str(bad), "--out", out], f"{bad} line 3: not valid JSON"),
        (["batch", str(folder), str(no_key), "--out", out], f"{no_key} line 2: no \"prompt\" key (keys: 'text')"),
        (["batch", str(folder), str(empty), "--out", out], f"{empty} has no prompts"),
        (["batch", str(folder), str(tmp / "missing.jsonl"), "--out", out], "missing.jsonl does not exist"),
        (["batch", str(folder), str(good), "--out", str(good)], "exists and is not a folder"),
        (["batch", str(folder), str(good), "--out", out, "--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
        (["batch", str(no_chat), str(good), "--out", out, "--chat"], "has no chat template; drop --chat"),
        (["analyze", str(folder), "--prompt", "  "], "--prompt is empty"),
    ]


def test_errors_are_one_line_with_status_2(tiny_llama_dir, tmp_path, capsys):
    for argv, message in _error_cases(tiny_llama_dir, tmp_path):
        rc = main(argv)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("corevital: error:")]
        assert rc == 2, (argv, err)
        assert len(lines) == 1 and message in lines[0], (argv, err)
    assert not (tmp_path / "runs").exists() or not trace_files(tmp_path / "runs")


def test_batch_interrupted_then_resumed(tiny_llama_dir, tmp_path, capsys):
    """Ctrl-C mid-batch: exit 130 saying how many are saved; the same command resumes, traces each
    remaining prompt once, leaves the finished files untouched and says how many were done."""
    folder = str(tiny_llama_dir)
    prompts = _jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    out = tmp_path / "runs"
    argv = ["batch", folder, str(prompts), "--out", str(out), "--max-new-tokens", "64"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "corevital_widgets.cli", *argv], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not out.exists() or len(trace_files(out)) < 3:
            assert child.poll() is None, f"batch exited early: {child.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no trace files appeared in 120 s"
            time.sleep(0.01)
        child.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    saved = file_stamps(out)
    assert child.returncode == 130, err[-3000:]
    assert 3 <= len(saved) < N_PROMPTS, f"the interrupt should land mid-run; {len(saved)} traces were on disk"
    assert f"interrupted: {len(saved)} of {N_PROMPTS} prompts are saved in {out}; run the same command again to resume" in err
    assert "Traceback" not in err

    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"{len(saved)} of {N_PROMPTS} prompts already traced in {out}; tracing the remaining {N_PROMPTS - len(saved)}" in err
    assert f"traced {N_PROMPTS - len(saved)} prompt" in err
    kwargs = {"max_new_tokens": 64}
    expected = sorted(f"{prompt_key(i, p, folder, kwargs)}{TRACE_SUFFIX}" for i, p in enumerate(PROMPTS))
    assert [p.name for p in trace_files(out)] == expected and not list(out.glob(".*.tmp"))
    after = file_stamps(out)
    assert all(after[name] == stamp for name, stamp in saved.items()), "a finished prompt was traced again"
    ts = TraceSet.load(out)
    assert ts.prompts == PROMPTS and len(ts) == N_PROMPTS

    assert main(argv) == 0  # a third run has nothing to do
    assert f"all {N_PROMPTS} prompts are already traced in {out}" in capsys.readouterr().err
    assert file_stamps(out) == after


def test_batch_chat_keys_match_analyze_many(tiny_llama_dir, tmp_path, capsys):
    """--chat traces the templated prompts; the files are the ones analyze_many names for the same
    folder and keyword arguments (so each resumes the other)."""
    from corevital_widgets.model_dir import ModelDirLoader

    folder = str(tiny_llama_dir)
    texts = ["Why is the sky blue?", "Name a colour.", "What is 2 + 2?"]
    out = tmp_path / "runs"
    assert main(["batch", folder, str(_jsonl(tmp_path / "p.jsonl", texts)), "--out", str(out), "--chat",
                 "--max-new-tokens", "3"]) == 0, capsys.readouterr().err
    templated = [_chat(tiny_llama_dir, t) for t in texts]
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert [e["prompt"] for e in manifest["entries"]] == templated
    before = file_stamps(out)
    model, tok = ModelDirLoader(folder)()
    ts = analyze_many(model, templated, tok, out_dir=out, progress=False, max_new_tokens=3)
    assert file_stamps(out) == before and len(ts) == 3


def test_batch_size_gives_the_same_files(tiny_llama_dir, tmp_path, capsys):
    folder = str(tiny_llama_dir)
    prompts = _jsonl(tmp_path / "p.jsonl", PROMPTS[:5])
    for name, extra in (("one", []), ("two", ["--batch-size", "2"])):
        assert main(["batch", folder, str(prompts), "--out", str(tmp_path / name), "--max-new-tokens", "4", *extra]) == 0
    capsys.readouterr()
    assert [p.name for p in trace_files(tmp_path / "one")] == [p.name for p in trace_files(tmp_path / "two")]
    for a, b in zip(TraceSet.load(tmp_path / "one"), TraceSet.load(tmp_path / "two")):
        assert np.array_equal(a.generated_ids, b.generated_ids)
        np.testing.assert_allclose(a.timeline.entropy, b.timeline.entropy, rtol=1e-3, atol=1e-4)
