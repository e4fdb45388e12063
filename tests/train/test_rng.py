import io
import logging
import random

import numpy as np
import pytest
import torch

from ember.train.rng import get_rng_state, seed_everything, set_rng_state


def _draw():
    # random.gauss and np.random.randn keep a cached second value: draw two of each so that
    # the cached part of the state matters.
    return (
        random.random(),
        random.gauss(0, 1),
        np.random.rand(3).tolist(),
        np.random.randn(1).tolist(),
        torch.rand(4).tolist(),
        torch.randint(0, 1000, (3,)).tolist(),
    )


def _weights_only_round_trip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_set_rng_state_repeats_all_generators():
    seed_everything(123)
    _draw()  # move away from the freshly seeded state, leaving cached gaussians behind
    random.gauss(0, 1)
    np.random.randn(1)
    state = get_rng_state()
    first = _draw()
    second = _draw()
    assert first != second
    set_rng_state(state)
    assert _draw() == first


def test_rng_state_survives_weights_only_load():
    state = _weights_only_round_trip(get_rng_state())
    first = _draw()
    set_rng_state(state)
    assert _draw() == first


def test_get_rng_state_holds_only_plain_values():
    state = get_rng_state()
    assert set(state) >= {"python", "numpy", "torch"}
    assert ("cuda" in state) == torch.cuda.is_available()
    assert isinstance(state["python"]["state"], torch.Tensor)
    assert isinstance(state["numpy"]["state"], torch.Tensor)
    assert state["numpy"]["bit_generator"] == "MT19937"


def test_seed_everything_is_reproducible():
    assert seed_everything(7) == 7
    a = _draw()
    seed_everything(7)
    assert _draw() == a
    seed_everything(8)
    assert _draw() != a


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_everything_rejects_out_of_range(seed):
    with pytest.raises(
        ValueError, match=rf"expected an integer in \[0, 2\*\*32 - 1\]. Received: seed={seed}"
    ):
        seed_everything(seed)


@pytest.mark.parametrize("seed", [1.5, "3", True])
def test_seed_everything_rejects_non_integers(seed):
    with pytest.raises(TypeError, match="Received: seed="):
        seed_everything(seed)


def test_set_rng_state_names_missing_keys():
    state = get_rng_state()
    del state["numpy"]
    with pytest.raises(ValueError, match=r"missing keys \['numpy'\]"):
        set_rng_state(state)


def test_set_rng_state_rejects_non_dict():
    with pytest.raises(TypeError, match="Received: list"):
        set_rng_state([1, 2])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only fallback")
def test_cuda_state_without_cuda_warns_and_restores_the_rest(caplog):
    state = get_rng_state()
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)]
    first = _draw()
    with caplog.at_level(logging.WARNING, logger="ember.train.rng"):
        set_rng_state(state)
    assert "CUDA is not available" in caplog.text
    assert _draw() == first


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rng_state_round_trip():
    state = _weights_only_round_trip(get_rng_state())
    first = torch.rand(4, device="cuda").tolist()
    set_rng_state(state)
    assert torch.rand(4, device="cuda").tolist() == first


def test_seeding_a_fit_skips_torchs_inductor_import_when_determinism_is_unchanged():
    # torch.use_deterministic_algorithms imports torch._inductor.config (~1.5 s) every call;
    # seed_run only calls it when the mode changes. Run in a fresh interpreter: other tests may
    # have imported inductor already.
    import subprocess
    import sys

    code = """
import sys, torch
from ember.train.trainer_setup import set_deterministic
set_deterministic(False)
assert "torch._inductor.config" not in sys.modules, "imported for nothing"
set_deterministic(True)
assert torch.are_deterministic_algorithms_enabled()
import torch._inductor.config as inductor
assert inductor.deterministic
set_deterministic(False)
assert not torch.are_deterministic_algorithms_enabled() and not inductor.deterministic
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
