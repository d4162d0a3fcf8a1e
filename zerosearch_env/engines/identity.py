"""Model identities for caches: which weights (and at which precision) wrote a text.

A cache entry written by one model must never be served for another. An engine's `name` is built
from:

* a local folder: its resolved path plus a fingerprint of its files. Every regular file at the top
  of the folder (weights, config, tokenizer, chat template) contributes its name, size and mtime
  (nanoseconds); a `.safetensors` file also contributes a SHA-256 of its header (tensor names,
  dtypes, shapes and offsets). Nothing reads the weights themselves, so this costs a few `stat`
  calls and header reads however big the model is; rewriting a file in place changes its mtime
  and so the identity.
* a hub id: the folder of the cached snapshot it loads from (its path holds the commit), fingerprinted
  the same way.
* weights already in memory: a SHA-256 of every tensor of the state dict (bytes, dtype, shape).

The dtype the weights run at is appended by the engines (`float32` and `bfloat16` texts differ).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

_HEADER_LIMIT = 100 * 1024 * 1024  # the safetensors format caps its JSON header at 100 MB


def _safetensors_header(path: Path) -> bytes:
    with path.open("rb") as f:
        size_bytes = f.read(8)
        if len(size_bytes) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (size,) = struct.unpack("<Q", size_bytes)
        if size > _HEADER_LIMIT:
            raise ValueError(f"{path}: safetensors header of {size} bytes is over the format's limit")
        return size_bytes + f.read(size)


def folder_fingerprint(folder: str | Path) -> str:
    """SHA-256 (hex) of the top-level files of a model folder: names, sizes, mtimes, and the
    headers of `.safetensors` files (see the module docstring)."""
    root = Path(folder)
    files = sorted(p for p in root.iterdir() if p.is_file())
    if not files:
        raise ValueError(f"model folder {root} holds no files")
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(json.dumps([p.name, st.st_size, st.st_mtime_ns]).encode("utf-8"))
        if p.suffix == ".safetensors":
            h.update(hashlib.sha256(_safetensors_header(p)).digest())
    return h.hexdigest()


def resolve_model_folder(source: str | Path) -> Path:
    """The local folder `from_pretrained(source)` reads: `source` itself when it is a folder, else
    the cached hub snapshot of that id (its path holds the revision)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(source), local_files_only=True)).resolve()
    except Exception as exc:  # not cached, bad id: the identity cannot be known
        raise ValueError(f"cannot find model {source!r} as a folder or a cached hub snapshot to fingerprint it; "
                         f"pass the engine an explicit name=") from exc


def source_identity(source: str | Path) -> str:
    """`<resolved folder>@<first 16 hex of its fingerprint>` for a folder or a cached hub id."""
    folder = resolve_model_folder(source)
    return f"{folder}@{folder_fingerprint(folder)[:16]}"


def weights_identity(model) -> str:
    """`memory@<first 16 hex>` of a SHA-256 over every tensor of `model.state_dict()`."""
    import torch

    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(json.dumps([key, str(t.dtype), list(tensor.shape)]).encode("utf-8"))
        h.update(t.view(torch.uint8).numpy().tobytes())
    return f"memory@{h.hexdigest()[:16]}"
