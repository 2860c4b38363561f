"""analyze_many / TraceSet: resumable batch tracing survives SIGKILL with every prompt traced once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from corevital_widgets.batch import (
    MANIFEST_NAME,
    TRACE_SUFFIX,
    TraceSet,
    analyze_many,
    prompt_key,
)
from corevital_widgets.analysis.features import trace_features
from corevital_widgets.trace.storage import load_trace

N_PROMPTS = 20
PROMPTS = [f"Question {i}: what is {i} plus {i + 1}? Answer:" for i in range(N_PROMPTS)]
KWARGS = {"max_new_tokens": 3, "min_new_tokens": 3}


@pytest.fixture(scope="module")
def tiny_model_dir(smollm2, tmp_path_factory):
    """A small random-config Llama with SmolLM2's tokenizer, saved to disk so that a
    subprocess loads it in about a second."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = smollm2[1]
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = LlamaForCausalLM(cfg).eval()
    folder = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from corevital_widgets.batch import analyze_many
    folder, out, prompts, kwargs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    print("loaded", flush=True)
    # on_step is not part of a prompt's key: the pause only widens the window for the kill.
    analyze_many(model, prompts, tok, out_dir=out, progress=False, on_step=lambda *_: time.sleep(0.02), **kwargs)
    print("finished", flush=True)
    """
)


def _trace_files(out: Path) -> list[Path]:
    return sorted(out.glob(f"*{TRACE_SUFFIX}"))


def test_sigkill_mid_run_then_rerun_traces_every_prompt_exactly_once(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tiny_model_dir), str(out), json.dumps(PROMPTS), json.dumps(KWARGS)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while len(_trace_files(out)) < 3 if out.exists() else True:
        assert child.poll() is None, f"child exited early: {child.stdout.read().decode()}"
        assert time.monotonic() < deadline, "child made no progress in 120 s"
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    survivors = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _trace_files(out)}
    assert 3 <= len(survivors) < N_PROMPTS, f"the kill should land mid-run; {len(survivors)} traces were on disk"

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ts = analyze_many(model, PROMPTS, tok, out_dir=out, progress=False, **KWARGS)

    files = _trace_files(out)
    expected = [f"{prompt_key(i, p, str(tiny_model_dir), KWARGS)}{TRACE_SUFFIX}" for i, p in enumerate(PROMPTS)]
    assert [f.name for f in files] == sorted(expected), "one trace file per prompt, nothing extra"
    assert not list(out.glob(".*.tmp")), "no temp files left behind"
    for name, (ino, mtime) in survivors.items():  # traces finished before the kill were not redone
        st = (out / name).stat()
        assert (st.st_ino, st.st_mtime_ns) == (ino, mtime), f"{name} was traced twice"

    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert [e["index"] for e in manifest["entries"]] == list(range(N_PROMPTS))
    assert [e["prompt"] for e in manifest["entries"]] == PROMPTS
    assert all(e["summary"] is not None for e in manifest["entries"])

    assert len(ts) == N_PROMPTS and ts.paths == [out / e for e in expected]
    for i, trace in enumerate(ts):  # each file holds the trace of its own prompt
        assert np.array_equal(trace.prompt_ids, tok(PROMPTS[i])["input_ids"])
        assert trace.n_steps == 3
        assert ts.summaries[i]["text"] == trace.text
        np.testing.assert_equal(ts.summaries[i]["entropy_mean"], trace_features(trace)["entropy_mean"])

    df = ts.to_pandas()
    assert len(df) == N_PROMPTS and list(df["prompt"]) == PROMPTS
    assert {"text", "verdict", "entropy_mean", "max_prob_mean"} <= set(df.columns)

    spec = ts.chart("entropy_mean", "margin_min", labels=[i % 2 for i in range(N_PROMPTS)], color="label").to_dict()
    data = next(iter(spec["datasets"].values()))
    assert len(data) == N_PROMPTS and spec["encoding"]["x"]["field"] == "entropy_mean"
    assert [row["margin_min"] for row in data] == pytest.approx(list(df["margin_min"]))
    with pytest.raises(ValueError, match="not a column"):
        ts.chart(x="no_such_feature")
    with pytest.raises(ValueError, match="one per prompt"):
        ts.chart(labels=[0, 1])

    # A third run does nothing; TraceSet.load reopens the folder identically.
    before = {p.name: p.stat().st_mtime_ns for p in _trace_files(out)}
    again = analyze_many(model, PROMPTS, tok, out_dir=out, progress=False, **KWARGS)
    assert {p.name: p.stat().st_mtime_ns for p in _trace_files(out)} == before
    reopened = TraceSet.load(out)
    assert reopened.keys == again.keys == ts.keys
    assert reopened.to_pandas().drop(columns=[]).equals(ts.to_pandas())


def test_saved_trace_without_manifest_entry_is_not_redone(tiny_model_dir, tmp_path):
    """A crash between trace.save and the manifest write: the file counts as done."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    out = tmp_path / "run"
    analyze_many(model, PROMPTS[:2], tok, out_dir=out, progress=False, **KWARGS)
    (out / MANIFEST_NAME).write_text("{ truncated")  # a damaged cache
    mtimes = {p.name: p.stat().st_mtime_ns for p in _trace_files(out)}
    ts = analyze_many(model, PROMPTS[:3], tok, out_dir=out, progress=False, **KWARGS)
    assert {p.name: p.stat().st_mtime_ns for p in _trace_files(out)}.items() >= mtimes.items()
    assert len(_trace_files(out)) == 3 and len(ts) == 3
    assert ts.summaries[0] == trace_features_row(load_trace(ts.paths[0]))


def trace_features_row(trace):
    from corevital_widgets.batch import trace_summary_row

    return trace_summary_row(trace)


def test_in_memory_and_kwargs_change_the_key(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ts = analyze_many(model, PROMPTS[:2], tok, progress=False, **KWARGS)
    assert ts.out_dir is None and ts.paths == [] and ts[1].n_steps == 3 and ts[-1] is ts[1]
    assert prompt_key(0, "a", "m", {"max_new_tokens": 3}) != prompt_key(0, "a", "m", {"max_new_tokens": 4})
    assert prompt_key(0, "a", "m", {}) != prompt_key(1, "a", "m", {}) != prompt_key(0, "b", "m", {})
    assert prompt_key(0, "a", "m", {"max_new_tokens": 3, "on_step": print}) == prompt_key(0, "a", "m", {"max_new_tokens": 3})


@pytest.mark.parametrize("prompts, exc", [("one string", TypeError), (["ok", 3], TypeError), (["ok", "  "], ValueError), (5, TypeError)])
def test_bad_prompts(tiny_model_dir, prompts, exc):
    with pytest.raises(exc, match="prompt"):
        analyze_many(str(tiny_model_dir), prompts)


def test_trace_pools_run_device_work_on_one_thread_whoever_asks():
    """A Ray actor's calls arrive on several threads; with ``device_thread`` their device work
    all runs on one thread (torch caches cuDNN attention plans per thread), one piece at a time,
    and an error reaches the caller. Without it, the work runs on the caller's own thread."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from corevital_widgets.batch import TracePools

    seen, running, overlaps = [], [0], []
    guard = threading.Lock()

    def work():
        with guard:
            running[0] += 1
            overlaps.append(running[0])
        time.sleep(0.01)
        with guard:
            running[0] -= 1
        seen.append(threading.current_thread().name)
        return threading.get_ident()

    with TracePools(2, device_thread=True) as pools, ThreadPoolExecutor(4) as callers:
        idents = list(callers.map(lambda _: pools.on_device(work), range(12)))
        assert len(set(idents)) == 1 and idents[0] != threading.get_ident()
        assert set(seen) == {seen[0]} and seen[0].startswith("corevital-device") and max(overlaps) == 1

        def fails():
            raise ValueError("on the device thread")

        with pytest.raises(ValueError, match="on the device thread"):
            pools.on_device(fails)
    with TracePools(2) as pools:
        assert pools.device is None and pools.on_device(threading.get_ident) == threading.get_ident()
