"""The trace file: one versioned, checksummed, compressed file; numpy + zstandard only.

Layout (little-endian)::

    offset 0   8 bytes  magic b"CVTRACE\\0"
           8   u32      schema version
          12   u32      reserved (0)
          16   u64      payload length in bytes
          24   32 bytes SHA-256 of the payload
          56   payload  zstd frame of: u32 header length, header JSON (utf-8), array blobs

The header JSON holds meta, tokens, health and a directory of arrays (name, dtype, shape,
offset, byte length, filter). Filters make arrays compress well and are undone exactly:
``shuffle`` stores the bytes of multi-byte values as byte planes; ``row_delta`` stores sparse
keys as differences within each CSR row. Writes go to a temporary file that replaces the
target only once complete, so a failed save never truncates an existing trace. Any
damage is caught by the checksum before anything is decoded.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zstandard

from .groups import Attention, Heads, Layers, Prompt, Timeline
from .health import Health
from .sparse import SparseAttention

if TYPE_CHECKING:  # pragma: no cover
    from .trace import Trace

MAGIC = b"CVTRACE\x00"
_HEADER = struct.Struct("<8sIIQ32s")
#: zstd level of the payload (on a 1,500-token SmolLM2 trace level 12 takes 0.73 s for 8.77 MB,
#: level 3 0.12 s for 8.94 MB; the byte shuffle does most of the work, and the 2% keep
#: ``attention_weight_bits=7`` traces under 2.5 MB). Dataset runs save on several threads
#: (zstd releases the GIL) while the accelerator works on the next batch.
ZSTD_LEVEL = 12
#: zstd level of dataset runs (analyze_many, ray_analyze_many). On a 32-layer, 32-head trace of a
#: 500-550-token prompt (3.9 M sparse entries, 17 MB before compression) level 1 compresses in
#: 22 ms to 9.87 MB, level 3 in 77 ms to 9.87 MB and level 12 in 0.4 s to 9.97 MB on a dev CPU
#: (the byte shuffle and the row deltas do the work; a H200 host's CPU is 1.5x slower). Saves run
#: on threads beside the thread that launches the model's work, and the last batch's saves are the
#: run's tail, so the fastest level that compresses as well is the one.
ZSTD_LEVEL_DATASET = 1
_GROUPS = {"timeline": Timeline, "layers": Layers, "attention": Attention, "heads": Heads, "prompt": Prompt}


class TraceFileError(ValueError):
    """A file that is not a readable trace: wrong kind, wrong version, truncated or corrupt."""


# ------------------------------------------------------------------------------ filters
def _shuffle_into(a: np.ndarray, out: np.ndarray) -> None:
    """Write ``a``'s bytes as byte planes (the ``shuffle`` filter) into ``out`` (uint8, ``a.nbytes``
    long): one strided numpy copy, made without the GIL (a dataset saves on threads beside the
    thread that launches the model's work; ``tobytes`` and ``bytes.join`` would hold it)."""
    raw = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    k = a.dtype.itemsize
    if k == 1 or a.size == 0:
        out[...] = raw
    else:
        out.reshape(k, a.size)[...] = raw.reshape(a.size, k).T


def _unshuffle(buf: bytes, dtype: np.dtype, count: int) -> np.ndarray:
    raw = np.frombuffer(buf, dtype=np.uint8)
    if dtype.itemsize > 1 and count:
        raw = raw.reshape(dtype.itemsize, count).T
    return np.ascontiguousarray(raw).view(dtype).reshape(-1)


def _row_starts(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = counts.ravel().astype(np.int64)
    c = c[c > 0]
    starts = np.zeros(c.size, dtype=np.int64)
    np.cumsum(c[:-1], out=starts[1:])
    return starts, c


def _row_delta_encode(keys: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Keys as differences within each CSR row (a row's first key kept), in the keys' own
    unsigned type: keys ascend within a row, so no difference that is kept wraps (those across a
    row start do, and are overwritten); no wider copies (the largest cost of a dataset save)."""
    if keys.size == 0:
        return keys.copy()
    starts, _ = _row_starts(counts)
    d = np.empty_like(keys)  # d[0] is a row start (counts sum to the keys: SparseAttention checks it)
    np.subtract(keys[1:], keys[:-1], out=d[1:])
    d[starts] = keys[starts]
    return d


def _row_delta_decode(deltas: np.ndarray, counts: np.ndarray) -> np.ndarray:
    if deltas.size == 0:
        return deltas
    starts, lengths = _row_starts(counts)
    cs = np.cumsum(deltas.astype(np.int64))
    base = cs[starts] - deltas[starts].astype(np.int64)
    return (cs - np.repeat(base, lengths)).astype(deltas.dtype)


# ---------------------------------------------------------------------------- encoding
def _arrays(trace: "Trace") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {"prompt_ids": trace.prompt_ids, "generated_ids": trace.generated_ids}
    for gname in _GROUPS:
        for name, arr in getattr(trace, gname).arrays().items():
            out[f"{gname}.{name}"] = arr
    for name, arr in trace.sparse.arrays().items():
        out[f"sparse.{name}"] = arr
    return out


def _check_level(level: int | None) -> int:
    if level is None:
        return ZSTD_LEVEL
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 22:
        raise ValueError(f"level must be a zstd compression level, an int from 1 to 22; got {level!r}")
    return level


def _encode(trace: "Trace", level: int | None) -> tuple[bytes, bytes]:
    """The file's fixed header and its payload (written one after the other: no joined copy)."""
    level = _check_level(level)
    arrays = _arrays(trace)
    filtered = dict(arrays)  # what is stored: the arrays after their first filter (shuffle comes last)
    filtered["sparse.keys"] = _row_delta_encode(arrays["sparse.keys"], trace.sparse.row_counts)
    directory: list[dict[str, Any]] = []
    offset = 0
    for name, arr in arrays.items():
        filt = "row_delta+shuffle" if name == "sparse.keys" else "shuffle"
        directory.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset,
                          "nbytes": arr.nbytes, "filter": filt})
        offset += arr.nbytes
    header = {
        "meta": trace.meta,
        "prompt_tokens": trace.prompt_tokens,
        "generated_tokens": trace.generated_tokens,
        "top_k_tokens": trace.top_k_tokens,
        "health": trace.health.to_dict(),
        "sparse": {"threshold": trace.sparse.threshold, "cap": trace.sparse.cap},
        "arrays": directory,
    }
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False, allow_nan=True).encode("utf-8")
    inner = np.empty(4 + len(head) + offset, dtype=np.uint8)  # filled in place: no bytes copies
    inner[:4] = np.frombuffer(struct.pack("<I", len(head)), dtype=np.uint8)
    inner[4 : 4 + len(head)] = np.frombuffer(head, dtype=np.uint8)
    body = inner[4 + len(head) :]
    for entry in directory:
        _shuffle_into(filtered[entry["name"]], body[entry["offset"] : entry["offset"] + entry["nbytes"]])
    payload = zstandard.ZstdCompressor(level=level).compress(inner)
    from .trace import SCHEMA_VERSION

    return _HEADER.pack(MAGIC, SCHEMA_VERSION, 0, len(payload), hashlib.sha256(payload).digest()), payload


def trace_to_bytes(trace: "Trace", level: int | None = None) -> bytes:
    """Serialise a trace to the file format (see module docstring); ``level``: zstd level
    (default ZSTD_LEVEL; any level reads back the same)."""
    return b"".join(_encode(trace, level))


def _file_mode(target: Path) -> int:
    """The existing file's permissions, else what a plain open() would give (0666 & ~umask)."""
    if target.exists():
        return target.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_bytes_atomic(path: Path, data: bytes | tuple[bytes, ...]) -> None:
    """Write ``data`` (bytes, or parts written one after the other) to ``path`` via a temp file in
    the same folder (the target's permissions), fsync and rename: a crash leaves the old file or
    the new one, never a torn one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    try:
        os.chmod(tmp, _file_mode(path))
        with os.fdopen(fd, "wb") as fh:
            for part in (data,) if isinstance(data, bytes) else data:
                fh.write(part)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`write_bytes_atomic` of UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))


def save_trace(trace: "Trace", path: str | PathLike[str], level: int | None = None) -> int:
    """Write atomically: temp file in the same folder, fsync, rename. Returns bytes written.
    ``level``: zstd level (default ZSTD_LEVEL; dataset runs pass ZSTD_LEVEL_DATASET)."""
    parts = _encode(trace, level)  # fails before any file is touched
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a directory; pass a file path such as {target / 'trace.cvtrace'}")
    write_bytes_atomic(target, parts)
    return sum(map(len, parts))


# ---------------------------------------------------------------------------- decoding
def trace_from_bytes(data: bytes, source: str = "<bytes>") -> "Trace":
    """Parse the file format; raise TraceFileError naming what is wrong."""
    from .trace import SCHEMA_VERSION, Trace

    if not data[: len(MAGIC)] == MAGIC[: len(data)]:
        raise TraceFileError(f"{source}: not a corevital trace file (bad magic bytes)")
    if len(data) < _HEADER.size:
        raise TraceFileError(f"{source}: truncated trace file ({len(data)} bytes, shorter than the {_HEADER.size}-byte header)")
    _, version, reserved, length, digest = _HEADER.unpack_from(data)
    if version != SCHEMA_VERSION:
        newer = "newer" if version > SCHEMA_VERSION else "older"
        raise TraceFileError(
            f"{source}: trace schema version {version}, but this corevital_widgets reads version {SCHEMA_VERSION} "
            f"(the file was written by a {newer} release; "
            f"{'upgrade corevital_widgets' if newer == 'newer' else 're-run analyze to make a new trace'})"
        )
    if reserved != 0:
        raise TraceFileError(f"{source}: corrupt trace file: reserved header field is {reserved:#x}, expected 0")
    payload = data[_HEADER.size :]
    if len(payload) < length:
        raise TraceFileError(f"{source}: truncated trace file: {len(payload)} of {length} payload bytes present")
    if len(payload) > length:
        raise TraceFileError(f"{source}: corrupt trace file: {len(payload) - length} unexpected bytes after the payload")
    if hashlib.sha256(payload).digest() != digest:
        raise TraceFileError(f"{source}: corrupt trace file: checksum mismatch (the bytes were altered)")
    try:
        inner = zstandard.ZstdDecompressor().decompress(payload)
        (head_len,) = struct.unpack_from("<I", inner)
        header = json.loads(inner[4 : 4 + head_len].decode("utf-8"))
        body = memoryview(inner)[4 + head_len :]
        arrays: dict[str, np.ndarray] = {}
        for entry in header["arrays"]:
            dtype = np.dtype(entry["dtype"])
            count = int(np.prod(entry["shape"], dtype=np.int64))
            blob = bytes(body[entry["offset"] : entry["offset"] + entry["nbytes"]])
            arrays[entry["name"]] = _unshuffle(blob, dtype, count).reshape(entry["shape"])
        arrays["sparse.keys"] = _row_delta_decode(arrays["sparse.keys"], arrays["sparse.row_counts"])
        groups = {
            g: cls(**{k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(g + ".")})
            for g, cls in _GROUPS.items()
        }
        sparse = SparseAttention(arrays["sparse.row_counts"], arrays["sparse.keys"], arrays["sparse.weights"],
                                 threshold=header["sparse"]["threshold"], cap=header["sparse"]["cap"])
        return Trace(
            meta=header["meta"], prompt_ids=arrays["prompt_ids"], prompt_tokens=header["prompt_tokens"],
            generated_ids=arrays["generated_ids"], generated_tokens=header["generated_tokens"],
            top_k_tokens=header["top_k_tokens"], sparse=sparse, health=Health.from_dict(header["health"]), **groups,
        )
    except TraceFileError:
        raise
    except Exception as err:  # checksum passed but content is not what this version writes
        raise TraceFileError(f"{source}: corrupt trace file: {type(err).__name__}: {err}") from err


def load_trace(path: str | PathLike[str]) -> "Trace":
    """Load a trace written by :meth:`Trace.save` (works without torch installed)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no trace file at {p}")
    return trace_from_bytes(p.read_bytes(), source=str(p))
