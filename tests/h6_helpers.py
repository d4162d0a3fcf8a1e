"""Shared by the SPRM / PCL tests: a real byte-level BPE tokenizer and a tiny Llama built in code."""

from __future__ import annotations

import functools

PROTOCOL_TEXT = [
    "<think>I should look this up.\n\nThe guild is old.</think><search>Velmora Guild founder</search>",
    "<information>Doc 1 (Title: Velmora Guild) founded by Ansel Quorrin.\n\nMore text.</information>",
    "<think>The document says Ansel Quorrin.</think><answer>Ansel Quorrin</answer><reward>0.8</reward>",
    "<confidence>0.7</confidence> Question: Who founded the Velmora Guild? Answer the question below.",
]


@functools.lru_cache(maxsize=1)
def tiny_tokenizer():
    """A byte-level BPE tokenizer trained here on protocol text (any string round-trips)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    from zerosearch_env.prompts import build_prompt

    corpus = PROTOCOL_TEXT + [build_prompt("Who founded the Velmora Guild?", calibration=True)]
    tok.train_from_iterator(corpus * 20, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def tiny_llama(vocab_size: int, seed: int = 0, layers: int = 2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                      pad_token_id=0, bos_token_id=None, eos_token_id=1, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def one_thread():
    """Generator for an autouse fixture: run a test with one torch thread (tiny tensors gain
    nothing from more, and a busy 2-core machine makes OpenMP's spin-waits very slow), restoring
    the previous setting afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_traj(tok, turns, env, em, group=0, task=None):
    """A rollout `Trajectory` from agent turns and the env texts between them, labelled by `em`."""
    from agents.rollout import Trajectory

    t = Trajectory(prompt="Q", prompt_ids=tok("Question: who?\n")["input_ids"], group=group, task=task)
    for i, a in enumerate(turns):
        t.add(tok(a)["input_ids"], a, agent=True, logprobs=[-1.0] * len(tok(a)["input_ids"]))
        if i < len(env):
            t.add(tok(env[i])["input_ids"], env[i], agent=False)
    t.reward = float(em)
    t.info = {"em": float(em), "f1": float(em), "answered": True}
    return t
