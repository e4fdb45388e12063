"""Histograms of many tensors at once: a few fused kernels and one device-to-host read per group."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Histogram", "histograms"]


@dataclass(frozen=True)
class Histogram:
    """Equal-width histogram of one tensor's finite values (the fields of TensorBoard's HistogramProto)."""

    min: float
    max: float
    num: int
    sum: float
    sum_squares: float
    bucket_limit: list[float]  # upper edge of each bucket
    bucket: list[float]  # count in each bucket


def histograms(tensors: list[torch.Tensor], bins: int = 30) -> list[Histogram | None]:
    """Histogram every tensor in `tensors` over its own [min, max] range in `bins` equal buckets.

    Non-finite values are left out, so a diverged run still gets its other histograms; a tensor
    with no finite value gives None. A constant tensor gives one bucket. The work is a few fused
    (`torch._foreach_*`) kernels, one `bincount` and two reads back to the host for all tensors
    together, instead of several kernels and reads per tensor: with the weights and gradients of
    every layer this runs after each epoch, and per-tensor `torch.histc` cost more than a short
    epoch's training.

    Args:
        tensors: tensors of any shape and floating dtype, all on the same device.
        bins: buckets per histogram.

    Returns:
        One `Histogram` (or None) per tensor, in order.

    Example:
        >>> [h.num for h in histograms([torch.ones(3), torch.arange(5.0)])]
        [3, 5]
    """
    if not tensors:
        return []
    flats = [t.detach().reshape(-1).float() for t in tensors]
    ranges = _finite_ranges(flats)
    keep = [i for i, r in enumerate(ranges) if r is not None]
    if not keep:  # nothing finite anywhere (a fully diverged run)
        return [None] * len(tensors)
    kept = [flats[i] for i in keep]
    lows = [ranges[i][0] for i in keep]
    scales = [bins / (hi - lo) if hi > lo else 0.0 for lo, hi in (ranges[i] for i in keep)]
    # Bucket index of every value, offset by its tensor's position so one bincount serves all.
    scaled = torch._foreach_mul(torch._foreach_sub(kept, lows), scales)
    torch._foreach_clamp_max_(scaled, bins - 0.5)  # the max lands in the last bucket
    torch._foreach_add_(scaled, [float(j * bins) for j in range(len(kept))])
    counts = torch.bincount(torch.cat(scaled).long(), minlength=len(kept) * bins)
    sums = torch.stack([f.sum() for f in kept])
    squares = torch.stack(torch._foreach_norm(kept)) ** 2
    values = torch.cat([counts.to(sums.dtype), sums, squares]).tolist()  # read 2
    out: list[Histogram | None] = [None] * len(tensors)
    n_counts = len(kept) * bins
    for j, i in enumerate(keep):
        lo, hi = ranges[i]
        num = kept[j].numel()
        if hi > lo:
            step = (hi - lo) / bins
            limits = [lo + (b + 1) * step for b in range(bins)]
            bucket_counts = values[j * bins : (j + 1) * bins]
        else:
            limits, bucket_counts = [hi], [float(num)]
        total, square = values[n_counts + j], values[n_counts + len(kept) + j]
        out[i] = Histogram(lo, hi, num, total, square, limits, bucket_counts)
    return out


def _finite_ranges(flats: list[torch.Tensor]) -> list[list[float] | None]:
    """[min, max] of each tensor's finite values (None if none); drops non-finite values in place."""
    ranges = torch.stack([torch.stack(torch.aminmax(f)) for f in flats]).tolist()  # one read
    for i, (lo, hi) in enumerate(ranges):
        if not (math.isfinite(lo) and math.isfinite(hi)):  # rare: a diverged run
            flats[i] = flats[i][torch.isfinite(flats[i])]
            ranges[i] = torch.stack(torch.aminmax(flats[i])).tolist() if flats[i].numel() else None
    return ranges
