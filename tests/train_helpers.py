"""Tiny real components for the training tests: a byte-level BPE tokenizer trained in code on
protocol text, a randomly initialised 2-layer Llama, and a small task set with a function search
backend. Everything here is built in a second on CPU."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import torch

from zerosearch_env.data.task import Task
from zerosearch_env.prompts import build_prompt
from zerosearch_env.search.base import Document, FunctionSearch

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TASKS = [
    Task(id=f"t{i}", question=f"Where was person {name} born?", answers=(city,), split="train", kind="single")
    for i, (name, city) in enumerate([("Alva Renn", "Quorth"), ("Bo Tamsel", "Lindra"), ("Cira Vell", "Marrow"),
                                      ("Dov Esk", "Pellin"), ("Ena Yost", "Quorth"), ("Fim Oro", "Sabel")])
]


@functools.lru_cache(maxsize=1)
def tiny_tokenizer():
    """A byte-level BPE tokenizer (vocab ~600) trained on the prompts and protocol tags."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [build_prompt(t.question) for t in TASKS] + [
        "<think>I should search.</think><search>Alva Renn born</search>",
        "<information>Doc 1 (Title: Alva Renn) Alva Renn was born in Quorth.</information>",
        "<answer>Quorth</answer> <answer>Lindra</answer> Invalid action: no tag",
    ] * 3
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def tiny_model(seed: int = 0):
    """A random 2-layer Llama (hidden 64) over the tiny tokenizer's vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model


def lookup_backend() -> FunctionSearch:
    """Returns one document per request that states the fact the question asks about."""
    facts = {t.question: t.answers[0] for t in TASKS}

    def fn(requests):
        out = []
        for r in requests:
            ans = facts.get(r.question or "", "nowhere")
            out.append([Document(id=f"d-{ans}", title=ans, text=f"{r.query}: the answer is {ans}.")][: r.top_k])
        return out

    return FunctionSearch(fn, name="lookup")


def write_cli_config(tmp_path, env: dict | None = None, **sections):
    """A tiny random model saved under `tmp_path/tiny-model` and a TrainConfig file `tmp_path/cfg.json`
    that uses it for the CLI tests: BM25, 2 turns, 1 GRPO step of 1 question x 2 samples. `env`
    entries are added to the env section; `sections` replace top-level sections (e.g. `warmup`)."""
    import json

    model_dir = tmp_path / "tiny-model"
    tiny_model(seed=1).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    cfg = {"preset": "tiny", "model": str(model_dir), "trainable_layers": None, "precision": "fp32",
           "env": {"backend": "bm25", "max_turns": 2, "top_k": 1, "max_doc_chars": 100, **(env or {})},
           "warmup": {"enabled": False},
           "grpo": {"steps": 1, "prompts_per_step": 1, "group_size": 2, "max_new_tokens": 6}, **sections}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return path


def load_benchmark(name: str):
    """The module of `benchmarks/<name>.py` (benchmarks are scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
