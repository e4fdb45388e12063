"""Normalisation layers: BatchNorm (over channels, dim 1) and LayerNorm (over the last dim)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter, is_lazy

from ember.layers.base import Layer, _check_float

__all__ = ["BatchNorm", "LayerNorm"]

# input rank -> the torch BatchNorm flavour it corresponds to
_KINDS = {2: "1d", 3: "1d", 4: "2d", 5: "3d"}


class _LazyBatchNormAnyRank(nn.LazyBatchNorm1d):
    """LazyBatchNorm1d that stays itself after materialising and accepts 2-D to 5-D input.

    BatchNorm1d/2d/3d differ only in the rank they accept, so one module serves all of them.
    """

    cls_to_become = None

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in _KINDS:
            raise ValueError(f"expected 2-D to 5-D input, got {input.dim()}-D input")


class BatchNorm(Layer):
    """Batch normalisation over the channel dim (dim 1, channels first), picked by input rank.

    `(N, C)` and `(N, C, L)` behave like `nn.BatchNorm1d`, `(N, C, H, W)` like `nn.BatchNorm2d`,
    `(N, C, D, H, W)` like `nn.BatchNorm3d`. The first input fixes the rank and channel count.

    Args:
        momentum: Keras-style momentum of the moving statistics:
            `moving = momentum * moving + (1 - momentum) * batch` (torch's momentum is `1 - this`).
        epsilon: added to the variance for numerical stability.
        center: learn an offset (beta).
        scale: learn a scale (gamma). `center` and `scale` are on or off together.

    Example:
        >>> BatchNorm()(torch.zeros(4, 3, 8, 8)).shape
        torch.Size([4, 3, 8, 8])
    """

    def __init__(
        self, momentum: float = 0.99, epsilon: float = 1e-3, center: bool = True, scale: bool = True
    ) -> None:
        super().__init__()
        self.momentum = _check_float("momentum", momentum, 0.0, 1.0, high_inclusive=True)
        self.epsilon = _check_float("epsilon", epsilon, 0.0, float("inf"), high_inclusive=False)
        if center != scale:
            raise ValueError(
                "BatchNorm supports center and scale only together (torch's affine). "
                f"Received: center={center}, scale={scale}"
            )
        self.norm = _LazyBatchNormAnyRank(eps=epsilon, momentum=1.0 - momentum, affine=center)
        self.kind: str | None = None  # "1d", "2d" or "3d", set by the first input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kind = _KINDS.get(x.dim())
        if kind is None or (self.kind is not None and kind != self.kind):
            allowed = "2-D to 5-D input (N, C, ...)" if self.kind is None else f"{self.kind} input"
            raise ValueError(
                f"BatchNorm expects {allowed}, but received input of shape {tuple(x.shape)}."
            )
        mean = self.norm.running_mean
        if mean is not None and not is_lazy(mean) and x.shape[1] != mean.shape[0]:
            raise ValueError(
                f"BatchNorm was built for {mean.shape[0]} channels (dim 1), but received input of "
                f"shape {tuple(x.shape)}."
            )
        self.kind = kind
        return self.norm(x)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}, epsilon={self.epsilon}, kind={self.kind}"


class LayerNorm(LazyModuleMixin, Layer):
    """Layer normalisation over the last dim, whose size is found on first call.

    Args:
        epsilon: added to the variance for numerical stability (Keras default 1e-3).
        center: learn an offset (beta).
        scale: learn a scale (gamma).

    Shape:
        Input and output `(N, *, C)`.

    Example:
        >>> LayerNorm()(torch.randn(2, 5, 8)).shape
        torch.Size([2, 5, 8])
    """

    def __init__(self, epsilon: float = 1e-3, center: bool = True, scale: bool = True) -> None:
        super().__init__()
        self.epsilon = _check_float("epsilon", epsilon, 0.0, float("inf"), high_inclusive=False)
        self.weight = UninitializedParameter() if scale else None
        self.bias = UninitializedParameter() if center else None

    def initialize_parameters(self, x: torch.Tensor) -> None:
        """Give weight/bias the size of the last dim of `x` (called once by torch's lazy hook)."""
        if not self.has_uninitialized_params():
            return
        with torch.no_grad():
            for param, fill in ((self.weight, 1.0), (self.bias, 0.0)):
                if param is not None:
                    param.materialize((x.shape[-1],))
                    param.fill_(fill)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = next((p.shape[0] for p in (self.weight, self.bias) if p is not None), x.shape[-1])
        if x.dim() == 0 or x.shape[-1] != size:
            raise ValueError(
                f"LayerNorm was built for inputs with last dimension {size}, but received input "
                f"of shape {tuple(x.shape)}."
            )
        return F.layer_norm(x, (size,), self.weight, self.bias, self.epsilon)

    def extra_repr(self) -> str:
        return (
            f"epsilon={self.epsilon}, center={self.bias is not None}, "
            f"scale={self.weight is not None}"
        )
