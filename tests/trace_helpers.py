"""Helpers shared by the tests that compare whole traces or trace folders: the group-by-group
array comparison (each caller states its own tolerances), a trace folder's files and their
identities (a file re-written has a new inode or mtime), and one torch thread for tests that
trace beside Ray workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from corevital_widgets.batch import TRACE_SUFFIX

TRACE_GROUPS = ("timeline", "layers", "attention", "heads", "prompt")


def assert_groups_close(a, b, *, atol: float, rtol: float, what: str = "") -> None:
    """Every array of every trace group of ``b`` equals ``a``'s: same shape, floats within
    (atol, rtol) with NaNs in the same places, other dtypes exactly."""
    for group in TRACE_GROUPS:
        for name, x in getattr(a, group).arrays().items():
            y = getattr(getattr(b, group), name)
            label = f"{what} {group}.{name}".strip()
            assert x.shape == y.shape, f"{label}: {x.shape} vs {y.shape}"
            if x.dtype.kind == "f":
                np.testing.assert_allclose(y.astype(np.float64), x.astype(np.float64), atol=atol, rtol=rtol,
                                           equal_nan=True, err_msg=label)
            else:
                assert np.array_equal(x, y), label


def trace_files(out: Path) -> list[Path]:
    """The trace files of a folder, sorted by name."""
    return sorted(out.glob(f"*{TRACE_SUFFIX}"))


def file_stamps(out: Path) -> dict[str, tuple[int, int]]:
    """Each trace file's (inode, mtime): unchanged when nothing was traced again."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in trace_files(out)}


@pytest.fixture
def one_torch_thread():
    """Trace in this process with one thread (as each Ray worker of one CPU does): on a busy 2-core
    machine torch's second thread spin-waits and a tiny model's step gets ~50x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
