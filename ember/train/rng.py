"""Capture, restore and seed every global random number generator a training run touches.

The state returned by :func:`get_rng_state` holds only tensors, ints, floats, strings, lists, dicts
and ``None``, so it can be stored inside a checkpoint with ``torch.save`` and read back with
``torch.load(..., weights_only=True)`` (no pickle of arbitrary objects).

Covered generators: Python's :mod:`random`, NumPy's legacy global generator (``np.random.*``),
torch's CPU generator and, when CUDA is available, the generator of every CUDA device.
Explicit generator objects (``np.random.default_rng()``, ``torch.Generator()``) are not global
and belong to whoever owns them.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

__all__ = ["get_rng_state", "set_rng_state", "seed_everything"]

logger = logging.getLogger(__name__)

_REQUIRED_KEYS = ("python", "numpy", "torch")
_KNOWN_KEYS = (*_REQUIRED_KEYS, "cuda")
_MAX_SEED = 2**32 - 1  # numpy's legacy generator accepts seeds in [0, 2**32 - 1]


def get_rng_state() -> dict[str, Any]:
    """Return the state of all global random number generators.

    Returns:
        A dict with keys ``"python"``, ``"numpy"``, ``"torch"`` and, when CUDA is available,
        ``"cuda"`` (one state per device). It holds only tensors and plain Python values, so
        ``torch.load(..., weights_only=True)`` can read it back.

    Example:
        >>> state = get_rng_state()
        >>> a = torch.rand(3)
        >>> set_rng_state(state)
        >>> torch.equal(a, torch.rand(3))
        True
    """
    version, words, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            # 624 Mersenne-Twister words (< 2**32) plus the position: exact in int64.
            "state": torch.tensor(words, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "bit_generator": str(name),
            "state": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore all global random number generators from :func:`get_rng_state`'s result.

    A ``"cuda"`` entry is restored when CUDA is available (a warning is logged when it is not,
    or when the number of devices differs); a state saved without CUDA leaves CUDA untouched.

    Args:
        state: the dict returned by :func:`get_rng_state`, possibly after a
            ``torch.save`` / ``torch.load(weights_only=True)`` round trip.

    Returns:
        None.

    Example:
        >>> state = get_rng_state()
        >>> x = random.random()
        >>> set_rng_state(state)
        >>> random.random() == x
        True
    """
    if not isinstance(state, dict):
        raise TypeError(
            "Received an invalid value for `state`, expected the dict returned by "
            f"get_rng_state(). Received: {type(state).__name__}"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(
            f"RNG state is missing keys {missing}; expected keys {list(_KNOWN_KEYS)} "
            f"('cuda' optional). Received keys: {sorted(state)}"
        )
    unknown = sorted(set(state) - set(_KNOWN_KEYS))
    if unknown:
        logger.warning("Ignoring unknown RNG state entries %s", unknown)
    _set_python_state(state["python"])
    _set_numpy_state(state["numpy"])
    torch.set_rng_state(_as_byte_tensor(state["torch"]))
    if "cuda" in state:
        _set_cuda_state(state["cuda"])


def seed_everything(seed: int) -> int:
    """Seed Python's, NumPy's, torch's and every CUDA device's global generator.

    Args:
        seed: an integer in ``[0, 2**32 - 1]``.

    Returns:
        The seed, so that it can be logged or stored with the run's hyperparameters.

    Example:
        >>> seed_everything(42)
        42
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(
            "Received an invalid value for `seed`, expected an integer in [0, 2**32 - 1]. "
            f"Received: seed={seed!r} ({type(seed).__name__})"
        )
    seed = int(seed)
    if not 0 <= seed <= _MAX_SEED:
        raise ValueError(
            "Received an invalid value for `seed`, expected an integer in [0, 2**32 - 1]. "
            f"Received: seed={seed}"
        )
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    logger.info("Global seed set to %d", seed)
    return seed


def _set_python_state(entry: dict[str, Any]) -> None:
    words = tuple(int(w) for w in _to_list(entry["state"]))
    random.setstate((int(entry["version"]), words, entry["gauss_next"]))


def _set_numpy_state(entry: dict[str, Any]) -> None:
    keys = np.asarray(_to_list(entry["state"]), dtype=np.uint32)
    np.random.set_state(
        (
            str(entry["bit_generator"]),
            keys,
            int(entry["pos"]),
            int(entry["has_gauss"]),
            float(entry["cached_gaussian"]),
        )
    )


def _set_cuda_state(states: list[torch.Tensor]) -> None:
    if not torch.cuda.is_available():
        logger.warning("RNG state holds %d CUDA state(s) but CUDA is not available", len(states))
        return
    count = torch.cuda.device_count()
    if count != len(states):
        logger.warning(
            "RNG state holds %d CUDA state(s) but %d device(s) are visible; restoring the first %d",
            len(states),
            count,
            min(count, len(states)),
        )
    for device, s in enumerate(states[:count]):
        torch.cuda.set_rng_state(_as_byte_tensor(s), device)


def _to_list(value: Any) -> list[int]:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return list(value)


def _as_byte_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device="cpu", dtype=torch.uint8)
    return torch.tensor(list(value), dtype=torch.uint8)
