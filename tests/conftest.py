"""Shared test fixtures: a tiny random Llama with the SmolLM2 tokenizer, saved once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_tiny_llama(folder: Path, seed: int = 0, hidden_size: int = 64, num_layers: int = 2) -> Path:
    """Save a randomly initialised tiny Llama (seeded) plus the SmolLM2 tokenizer into `folder`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from zerosearch_env.models import default_model_path

    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny random Llama (hidden 64, 2 layers, SmolLM2 vocabulary) and its tokenizer.
    Load it with `AutoModelForCausalLM.from_pretrained(tiny_model_dir)` or `TransformersEngine(tiny_model_dir)`."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
