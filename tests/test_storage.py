"""The trace file: exact round trip, atomic writes, clear errors for damaged/other-version
files (hypothesis-generated damage included), loading without torch, and no hidden-size
vector ever saved."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import corevital_widgets as corevital
from corevital_widgets.trace import storage


@pytest.fixture(scope="module")
def small_trace(smollm2):
    model, tok = smollm2
    return corevital.analyze(model, "The capital of France is", tok, max_new_tokens=6)


@pytest.fixture(scope="module")
def small_bytes(small_trace):
    return small_trace.to_bytes()


def test_round_trip_is_exact(tmp_path, smollm2_trace):
    path = tmp_path / "t.cvtrace"
    size = smollm2_trace.save(path)
    assert size == path.stat().st_size
    loaded = corevital.load_trace(path)
    assert loaded == smollm2_trace
    for group in ("timeline", "layers", "attention", "heads", "prompt"):
        for name, arr in getattr(smollm2_trace, group).arrays().items():
            got = getattr(getattr(loaded, group), name)
            assert got.dtype == arr.dtype and got.shape == arr.shape
            assert np.array_equal(got.view(np.uint8), arr.view(np.uint8)), f"{group}.{name} not bit-exact"
    for name, arr in smollm2_trace.sparse.arrays().items():
        assert np.array_equal(getattr(loaded.sparse, name), arr)
    assert loaded.health == smollm2_trace.health
    assert loaded.attends_to(5, 3, 1)[0].tolist() == smollm2_trace.attends_to(5, 3, 1)[0].tolist()


def test_every_compression_level_reads_back_the_same_trace(tmp_path, smollm2_trace):
    """Dataset runs save at ZSTD_LEVEL_DATASET (faster, a few % larger); the file reads the same."""
    sizes = {}
    for level in (storage.ZSTD_LEVEL_DATASET, None):
        path = tmp_path / f"{level}.cvtrace"
        sizes[level] = smollm2_trace.save(path, level)
        assert corevital.load_trace(path) == smollm2_trace
    assert sizes[None] <= sizes[storage.ZSTD_LEVEL_DATASET]  # the default level compresses at least as well
    for bad in (0, 23, 2.5, True, "3"):
        with pytest.raises(ValueError, match="zstd compression level"):
            smollm2_trace.save(tmp_path / "bad.cvtrace", bad)
    assert not (tmp_path / "bad.cvtrace").exists()


def test_round_trip_without_prompt_telemetry_and_with_cap(smollm2, tmp_path):
    model, tok = smollm2
    for kw in ({"prompt_telemetry": False}, {"attention_cap": 3}):
        trace = corevital.analyze(model, "One two three four five six", tok, max_new_tokens=4, **kw)
        trace.save(tmp_path / "x.cvtrace")
        assert corevital.load_trace(tmp_path / "x.cvtrace") == trace
    assert (trace.sparse.row_counts <= 3).all() and trace.sparse.cap == 3


def test_no_hidden_size_vector_is_saved(smollm2_trace):
    d = smollm2_trace.meta["hidden_size"]
    sizes = {smollm2_trace.n_prompt, smollm2_trace.n_steps, smollm2_trace.n_layers, smollm2_trace.n_heads,
             smollm2_trace.meta["top_k"]}
    assert d not in sizes, "the check needs a hidden size distinct from every other dimension"
    header = _header(smollm2_trace.to_bytes())
    for entry in header["arrays"]:
        if entry["name"] in ("sparse.keys", "sparse.weights"):
            continue  # flat entry lists
        assert d not in entry["shape"], f"{entry['name']} has a hidden-size dimension {entry['shape']}"
    # and the float arrays hold at most T*L*H-sized data, never T*D activations
    assert all(np.prod(e["shape"]) < smollm2_trace.n_steps * d for e in header["arrays"] if not e["name"].startswith("sparse."))


def _header(data: bytes) -> dict:
    import json

    import zstandard

    inner = zstandard.ZstdDecompressor().decompress(data[56:])
    (n,) = struct.unpack_from("<I", inner)
    return json.loads(inner[4 : 4 + n])


def test_failed_save_leaves_existing_file_intact(tmp_path, small_trace, monkeypatch):
    path = tmp_path / "keep.cvtrace"
    small_trace.save(path)
    original = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        small_trace.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["keep.cvtrace"], "no temp file left behind"

    small_trace.meta["unserialisable"] = object()
    try:
        with pytest.raises(TypeError):
            small_trace.save(path)
    finally:
        del small_trace.meta["unserialisable"]
    assert path.read_bytes() == original


def test_save_to_a_directory_is_a_clear_error(tmp_path, small_trace):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        small_trace.save(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no trace file"):
        corevital.load_trace(tmp_path / "nope.cvtrace")


def test_not_a_trace(tmp_path):
    p = tmp_path / "x.cvtrace"
    p.write_bytes(b"PK\x03\x04 this is a zip, not a trace" * 4)
    with pytest.raises(corevital.TraceFileError, match="not a corevital trace file"):
        corevital.load_trace(p)


@pytest.mark.parametrize("version, word", [(corevital.SCHEMA_VERSION + 1, "newer"), (corevital.SCHEMA_VERSION - 1, "older")])
def test_other_schema_version(small_bytes, version, word):
    data = bytearray(small_bytes)
    data[8:12] = struct.pack("<I", version)
    with pytest.raises(corevital.TraceFileError, match=rf"schema version {version}.*{word}"):
        storage.trace_from_bytes(bytes(data))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_truncated_file_says_truncated(small_bytes, data):
    n = data.draw(st.integers(0, len(small_bytes) - 1))
    with pytest.raises(corevital.TraceFileError, match="truncated"):
        storage.trace_from_bytes(small_bytes[:n])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_byte_damage_is_detected(small_bytes, data):
    damaged = bytearray(small_bytes)
    n_hits = data.draw(st.integers(1, 4))
    for _ in range(n_hits):
        pos = data.draw(st.integers(0, len(damaged) - 1))
        damaged[pos] ^= data.draw(st.integers(1, 255))
    if bytes(damaged) == small_bytes:  # two flips cancelled out
        return
    with pytest.raises(corevital.TraceFileError):
        storage.trace_from_bytes(bytes(damaged))


def test_appended_garbage_is_detected(small_bytes):
    with pytest.raises(corevital.TraceFileError, match="unexpected bytes"):
        storage.trace_from_bytes(small_bytes + b"\x00")


def test_loads_and_queries_without_torch(tmp_path, small_trace):
    path = tmp_path / "t.cvtrace"
    small_trace.save(path)
    keys = small_trace.attends_to(3, 2, 1)[0].tolist()
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None          # any import of torch now fails
        sys.modules["transformers"] = None
        import corevital_widgets as corevital
        t = corevital.load_trace({str(path)!r})
        assert t.attends_to(3, 2, 1)[0].tolist() == {keys!r}
        print(t.health.verdict, t.n_steps)
        t.summary(); t.to_json(); t.to_pandas("heads")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [small_trace.health.verdict, str(small_trace.n_steps)]


def test_saved_file_has_ordinary_permissions(tmp_path, small_trace):
    path = tmp_path / "p.cvtrace"
    small_trace.save(path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    path.chmod(0o640)
    small_trace.save(path)  # overwriting keeps the user's permissions
    assert path.stat().st_mode & 0o777 == 0o640


def test_fewer_weight_bits_bound_the_error_and_shrink_the_file(smollm2):
    model, tok = smollm2
    prompt = "The committee met on Tuesday to review the budget, the hiring plan and the new office lease."
    exact = corevital.analyze(model, prompt, tok, max_new_tokens=3)
    small = corevital.analyze(model, prompt, tok, max_new_tokens=3, attention_weight_bits=7)
    assert small.meta["generation"]["attention_weight_bits"] == 7
    assert np.array_equal(exact.sparse.keys, small.sparse.keys)
    w, r = exact.sparse.weights.astype(np.float64), small.sparse.weights.astype(np.float64)
    assert (np.abs(r - w) <= w * 2.0 ** -8 + 1e-12).all()
    assert (small.sparse.weights.view(np.uint16) & 0b111 == 0).all(), "3 low mantissa bits dropped"
    saved_bits = 8 * (len(exact.to_bytes()) - len(small.to_bytes()))
    assert saved_bits >= 1.5 * exact.sparse.nnz, "most of the 3 dropped noise bits per entry are saved"
    with pytest.raises(ValueError, match="attention_weight_bits"):
        corevital.analyze(model, prompt, tok, max_new_tokens=2, attention_weight_bits=11)
