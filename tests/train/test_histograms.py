"""Fused histograms agree with per-tensor torch.histc and handle constant and non-finite tensors."""

import math

import pytest
import torch

from ember.train.histograms import histograms


def test_matches_histc_sum_and_squares_for_each_tensor():
    torch.manual_seed(0)
    tensors = [torch.randn(64, 32), torch.rand(17) * 5 - 1, torch.randn(3, 3, 4, 4).double()]
    for t, h in zip(tensors, histograms(tensors, bins=30)):
        flat = t.reshape(-1).float()
        lo, hi = flat.min().item(), flat.max().item()
        assert (h.min, h.max, h.num) == (lo, hi, t.numel())
        expected = torch.histc(flat, bins=30, min=lo, max=hi)
        # Values exactly on a bucket edge may fall either side in float32: allow one move per edge.
        assert sum(h.bucket) == t.numel()
        assert (torch.tensor(h.bucket) - expected).abs().sum() <= 2
        assert h.bucket_limit[-1] == pytest.approx(hi)
        assert len(h.bucket_limit) == 30
        assert h.sum == pytest.approx(flat.sum().item(), rel=1e-5, abs=1e-5)
        assert h.sum_squares == pytest.approx(flat.square().sum().item(), rel=1e-5)


def test_constant_tensor_gives_one_bucket():
    (h,) = histograms([torch.full((5,), 2.0)])
    assert (h.min, h.max, h.num, h.bucket_limit, h.bucket) == (2.0, 2.0, 5, [2.0], [5.0])


def test_non_finite_values_are_left_out_and_all_nan_gives_none():
    t = torch.tensor([1.0, float("nan"), 3.0, float("inf"), 2.0])
    h, empty, ok = histograms([t, torch.full((3,), float("nan")), torch.arange(4.0)])
    assert (h.min, h.max, h.num) == (1.0, 3.0, 3)
    assert sum(h.bucket) == 3 and math.isfinite(h.sum)
    assert empty is None
    assert (ok.min, ok.max, ok.num) == (0.0, 3.0, 4)


def test_empty_list_and_nothing_finite():
    assert histograms([]) == []
    assert histograms([torch.full((2,), float("nan")), torch.tensor([float("inf")])]) == [
        None,
        None,
    ]
