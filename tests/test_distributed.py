"""ray_analyze_many on a real local Ray (2 CPUs, 2 workers): the same trace files as analyze_many,
and a run killed midway resumes without tracing a finished prompt again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from corevital_widgets.analysis.features import trace_features
from corevital_widgets.batch import MANIFEST_NAME, TRACE_SUFFIX, TraceSet, analyze_many, prompt_key
from corevital_widgets.model_dir import ModelDirLoader
from corevital_widgets.prompt_files import PromptFileError, read_prompts

from .trace_helpers import assert_groups_close, file_stamps, one_torch_thread, trace_files  # noqa: F401 (a fixture)

N_PROMPTS = 12
PROMPTS = [f"Question {i}: what is {i} plus {i + 1}? Answer:" for i in range(N_PROMPTS)]
KWARGS = {"max_new_tokens": 6}


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs for this module (ray_analyze_many joins it and leaves it running)."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here traces with one torch thread (trace_helpers.one_torch_thread)."""


def assert_same_trace(a, b):
    assert np.array_equal(a.prompt_ids, b.prompt_ids) and np.array_equal(a.generated_ids, b.generated_ids)
    assert_groups_close(b, a, rtol=1e-3, atol=1e-4)
    for name, x in a.sparse.arrays().items():
        y = b.sparse.arrays()[name]
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x.astype(np.float64), y.astype(np.float64), rtol=1e-3, atol=1e-4, err_msg=name)
        else:
            assert np.array_equal(x, y), f"sparse.{name}"
    fa, fb = trace_features(a), trace_features(b)
    assert fa.keys() == fb.keys()
    np.testing.assert_allclose([fa[k] for k in fa], [fb[k] for k in fa], rtol=1e-3, atol=1e-4)


@dataclass(frozen=True)
class FolderLoader:
    """The model folder's own loader, as a base for loaders that leave evidence of their runs."""

    model_dir: str

    @property
    def model_name(self) -> str:
        return self.model_dir

    def __call__(self):
        return ModelDirLoader(self.model_dir)()


@dataclass(frozen=True)
class CountingLoader(FolderLoader):
    """Leaves one file per call in ``calls`` (named by the worker's pid)."""

    calls: str

    def __call__(self):
        (Path(self.calls) / f"{os.getpid()}-{time.monotonic_ns()}").touch()
        return super().__call__()


def _mark_forward(log: str, what: str, *_: object) -> None:
    with open(log, "a") as fh:
        fh.write(f"{os.getpid()} {threading.get_ident()} {what} {time.monotonic_ns()} {threading.current_thread().name}\n")


@dataclass(frozen=True)
class ForwardLogLoader(FolderLoader):
    """Its model appends each forward's start and end (pid, thread, time) to ``log``."""

    log: str

    def __call__(self):
        model, tok = super().__call__()
        model.register_forward_pre_hook(partial(_mark_forward, self.log, "start"))
        model.register_forward_hook(partial(_mark_forward, self.log, "end"))
        return model, tok


def forward_spans(log: Path) -> dict[int, list[tuple[str, int, int]]]:
    """Per worker process: its forwards as (thread "ident name", start, end), in order of start."""
    opened: dict[tuple[int, str], int] = {}
    spans: dict[int, list[tuple[str, int, int]]] = {}
    for line in log.read_text().splitlines():
        pid, ident, what, t, name = line.split(" ", 4)
        key = (int(pid), f"{ident} {name}")
        if what == "start":
            opened[key] = int(t)
        else:
            spans.setdefault(key[0], []).append((key[1], opened.pop(key), int(t)))
    return {pid: sorted(s, key=lambda x: x[1]) for pid, s in spans.items()}


@pytest.mark.slow
@dataclass(frozen=True)
class CrashOnce:
    """An ``on_step`` callback (not part of the file keys) that kills its worker process the first
    time any worker reaches step 2: a worker that dies mid-prompt."""

    marker: str

    def __call__(self, step: int, token_id: int) -> None:
        if step != 2:
            return
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os._exit(1)


def test_local_ray_two_workers_equals_analyze_many(local_ray, tiny_llama_dir, tmp_path):
    """Two workers over 12 prompts, one of which dies mid-prompt (Ray restarts it and retries the
    batch): the same files, with the same traces, as analyze_many."""
    from corevital_widgets import ray_analyze_many

    folder = str(tiny_llama_dir)
    calls = tmp_path / "calls"
    calls.mkdir()
    out = tmp_path / "ray"
    ts = ray_analyze_many(CountingLoader(folder, str(calls)), PROMPTS, out, num_workers=2, progress=False,
                          on_step=CrashOnce(str(tmp_path / "crashed")), **KWARGS)
    assert (tmp_path / "crashed").exists(), "a worker died mid-run"
    loads = [p.name.split("-")[0] for p in calls.iterdir()]
    assert len(loads) == 3 and len(set(loads)) == 3, f"one load per worker: two workers and the restarted one: {loads}"
    assert local_ray.is_initialized(), "a Ray the caller started is left running"

    expected = [f"{prompt_key(i, p, folder, KWARGS)}{TRACE_SUFFIX}" for i, p in enumerate(PROMPTS)]
    assert [p.name for p in ts.paths] == expected and [p.name for p in trace_files(out)] == sorted(expected)
    assert not list(out.glob(".*.tmp"))

    model, tok = ModelDirLoader(folder)()
    ref = analyze_many(model, PROMPTS, tok, out_dir=tmp_path / "local", progress=False, **KWARGS)
    assert [p.name for p in ref.paths] == expected, "the same deterministic names as analyze_many"
    for i, (a, b) in enumerate(zip(ts, ref)):
        assert np.array_equal(a.prompt_ids, tok(PROMPTS[i])["input_ids"])
        assert_same_trace(a, b)

    reopened = TraceSet.load(out)  # the manifest is analyze_many's
    assert reopened.keys == ref.keys and reopened.prompts == PROMPTS
    a_df, b_df = reopened.to_pandas(), ref.to_pandas()
    assert list(a_df.columns) == list(b_df.columns) and list(a_df["text"]) == list(b_df["text"])
    num = a_df.select_dtypes("number").columns
    np.testing.assert_allclose(a_df[num].to_numpy(float), b_df[num].to_numpy(float), rtol=1e-3, atol=1e-4)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["model"] == folder and all(e["summary"] is not None for e in manifest["entries"])

    from corevital_widgets import DatasetView

    view = DatasetView(reopened, [i % 2 == 0 for i in range(N_PROMPTS)])
    assert len(view.to_pandas()) == N_PROMPTS

    # each resumes the other: analyze_many on the Ray folder and Ray on analyze_many's trace nothing
    before = file_stamps(out)
    analyze_many(model, PROMPTS, tok, out_dir=out, progress=False, **KWARGS)
    assert file_stamps(out) == before
    before_local = file_stamps(tmp_path / "local")
    t0 = time.perf_counter()
    again = ray_analyze_many(folder, PROMPTS, tmp_path / "local", num_workers=2, progress=False, **KWARGS)
    assert time.perf_counter() - t0 < 5, "nothing to do: no workers are started"
    assert file_stamps(tmp_path / "local") == before_local and again.keys == ref.keys


def test_local_ray_batched_workers_equal_analyze_many(local_ray, tiny_llama_dir, tmp_path):
    """Each worker traces its prompts 4 per generate call (the batched engine): the same files
    and the same traces as analyze_many prompt by prompt. A worker runs two calls at once (one
    batch on the device while the other's files are built and saved), but every forward of a
    worker runs on its one device thread, whichever Ray thread the call came on: never two
    batches' forwards at once, and torch's per-thread caches (cuDNN's attention plans) shared."""
    from corevital_widgets import ray_analyze_many

    from .test_batched import assert_same_trace as same_as_alone

    folder = str(tiny_llama_dir)
    log = tmp_path / "forwards.log"
    ts = ray_analyze_many(ForwardLogLoader(folder, str(log)), PROMPTS, tmp_path / "ray", num_workers=2, batch_size=4,
                          progress=False, **KWARGS)
    spans = forward_spans(log)
    assert sum(len(s) for s in spans.values()) >= N_PROMPTS // 4 * KWARGS["max_new_tokens"], spans
    threads = {pid: {t for t, _, _ in s} for pid, s in spans.items()}
    for pid, names in threads.items():
        assert len(names) == 1 and next(iter(names)).split(" ", 1)[1].startswith("corevital-device"), (
            f"worker {pid} ran its forwards on one device thread: {names}")
    for pid, s in spans.items():
        for (t_a, _, end_a), (t_b, start_b, _) in zip(s, s[1:]):
            assert start_b >= end_a, f"worker {pid}: threads {t_a} and {t_b} ran forwards at the same time"
    model, tok = ModelDirLoader(folder)()
    ref = analyze_many(model, PROMPTS, tok, out_dir=tmp_path / "local", progress=False, **KWARGS)
    assert [p.name for p in ts.paths] == [p.name for p in ref.paths]
    sizes = []
    for a, b in zip(ts, ref):
        same_as_alone(b, a)
        sizes.append(a.meta["batch"]["size"])
    assert max(sizes) > 1, f"the workers traced in batches: {sizes}"


_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from corevital_widgets.distributed import ray_analyze_many
    folder, out, address, prompts, kwargs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), json.loads(sys.argv[5])
    print("started", flush=True)
    # on_step is not part of a prompt's key: the pause only widens the window for the kill.
    ray_analyze_many(folder, prompts, out, address=address, num_workers=2, progress=False,
                     on_step=lambda *_: time.sleep(0.1), **kwargs)
    print("finished", flush=True)
    """
)


@pytest.mark.slow
def test_killed_ray_run_resumes_without_retracing(local_ray, tiny_llama_dir, tmp_path, capsys):
    """A driver SIGKILLed mid-run (its workers die with its job), then `corevital batch --ray`
    resumes: every prompt traced once, the finished ones untouched, the done count reported."""
    from corevital_widgets.cli import main

    folder = str(tiny_llama_dir)
    out = tmp_path / "run"
    address = local_ray.get_runtime_context().gcs_address
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, folder, str(out), address, json.dumps(PROMPTS), json.dumps(KWARGS)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while not out.exists() or len(trace_files(out)) < 3:
            assert child.poll() is None, f"the run exited early: {child.stdout.read().decode()[-3000:]}"
            assert time.monotonic() < deadline, "no trace files appeared in 150 s"
            time.sleep(0.01)
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the driver's process group: the child and what it spawned
        child.wait(timeout=30)
    # the killed job's workers are gone once their CPUs are free again
    deadline = time.monotonic() + 60
    while local_ray.available_resources().get("CPU", 0) < 2:
        assert time.monotonic() < deadline, "the killed run's workers did not go away"
        time.sleep(0.2)
    survivors = file_stamps(out)
    assert 3 <= len(survivors) < N_PROMPTS, f"the kill should land mid-run; {len(survivors)} traces were on disk"

    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    capsys.readouterr()
    rc = main(["batch", folder, str(prompts_file), "--out", str(out), "--ray", "local", "--workers", "2",
               "--max-new-tokens", str(KWARGS["max_new_tokens"])])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"{len(survivors)} of {N_PROMPTS} prompts already traced" in err
    expected = sorted(f"{prompt_key(i, p, folder, KWARGS)}{TRACE_SUFFIX}" for i, p in enumerate(PROMPTS))
    assert [p.name for p in trace_files(out)] == expected and not list(out.glob(".*.tmp"))
    after = file_stamps(out)
    for name, stamp in survivors.items():
        assert after[name] == stamp, f"{name} was traced twice"
    ts = TraceSet.load(out)
    assert len(ts) == N_PROMPTS and all(t.n_steps >= 1 for t in ts)


def test_prompt_sources(tmp_path):
    import pandas as pd

    assert read_prompts(["a", "b"]) == ["a", "b"]
    assert read_prompts(pd.DataFrame({"prompt": ["a", "b"], "id": [1, 2]})) == ["a", "b"]
    jl = tmp_path / "p.jsonl"
    jl.write_text('{"prompt": "a", "id": 1}\n\n{"prompt": "b"}\n')
    assert read_prompts(jl) == read_prompts(str(jl)) == ["a", "b"]
    assert read_prompts(f"file://{jl}") == ["a", "b"]  # fsspec URLs
    pq = tmp_path / "p.parquet"
    pd.DataFrame({"prompt": ["x", "y", "z"]}).to_parquet(pq)
    assert read_prompts(pq) == ["x", "y", "z"]
    for text, message in [('{"prompt": "a"}\n{"prompt": 3}\n', 'line 2: "prompt" is a int'),
                          ('{"prompt": "a"}\n{"question": "b"}\n', "line 2: no \"prompt\" key (keys: 'question')"),
                          ('{"prompt": "a"}\n\n["b"]\n', "line 3: expected an object"),
                          ('{"prompt": "a"}\n{"prompt": "b"\n', "line 2: not valid JSON"),
                          ("\n\n", "has no prompts")]:
        jl.write_text(text)
        with pytest.raises(PromptFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read_prompts(jl)
    with pytest.raises(PromptFileError, match="does not exist"):
        read_prompts(tmp_path / "missing.jsonl")
    with pytest.raises(PromptFileError, match="no \"prompt\" column"):
        read_prompts(pd.DataFrame({"question": ["a"]}))
    with pytest.raises(TypeError, match="list of strings"):
        read_prompts("Why is the sky blue?")


def test_loader_needs_a_model_name(tmp_path):
    from corevital_widgets.distributed import ray_analyze_many

    pytest.importorskip("ray")
    with pytest.raises(TypeError, match="model_name"):
        ray_analyze_many(lambda: (None, None), ["a"], tmp_path)
    with pytest.raises(TypeError, match="loader must be"):
        ray_analyze_many(42, ["a"], tmp_path, model_name="m")
    with pytest.raises(ValueError, match="batch_size"):
        ray_analyze_many(lambda: (None, None), ["a"], tmp_path, model_name="m", batch_size=0)
