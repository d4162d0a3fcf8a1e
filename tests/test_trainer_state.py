"""The checkpoint's trainer state (`checkpoint/trainer.pt`) loads without unpickling Python objects:
`torch.load(..., weights_only=True)` reads it, and a pickled file from before is refused with a clear
error instead of being executed."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tests.test_train import _run


def test_trainer_state_loads_with_weights_only_and_old_pickles_are_refused(tmp_path):
    out = tmp_path / "run"
    _run(out, 1)
    path = out / "checkpoint" / "trainer.pt"
    blob = torch.load(path, weights_only=True)
    assert blob["optimizer"]["state"] and set(blob["rng"]) >= {"python", "numpy", "torch", "generator"}

    # what `save_checkpoint` wrote before: numpy's state as an ndarray, which only a full unpickler reads
    old = {"optimizer": blob["optimizer"], "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                                                   "torch": torch.get_rng_state(), "generator": blob["rng"]["generator"]}}
    torch.save(old, path)
    with pytest.raises(ValueError, match="weights_only") as err:
        _run(out, 2, resume=True)
    assert str(path) in str(err.value)


def test_rng_states_round_trip_through_the_tensor_form():
    from agents.trainer import _rng_state, _set_rng_state

    gen = torch.Generator().manual_seed(1)
    random.seed(5)
    np.random.seed(6)
    np.random.normal()  # leaves a cached Gaussian in numpy's state

    def draws():
        return (random.random(), np.random.normal(), float(torch.rand(1)), float(torch.rand(1, generator=gen)))

    saved = _rng_state(gen)
    first = draws()
    _set_rng_state(saved, gen)
    assert draws() == first
