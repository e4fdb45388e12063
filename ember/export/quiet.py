"""Silence the exporters' known, harmless chatter while ember exports (scoped, restored after)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["quiet_toolchains"]

# Loggers of the toolchains ember drives, with what they print on every export here.
_LOGGERS = (
    "torch.onnx._internal.exporter._registration",  # "torchvision is not installed. Skipping ..."
    "torchao",  # (via executorch) CUDA-only kernels that cannot load, "Detected no triton"
    "torch.utils._pytree",  # torchao's deprecated register_constant() on an Enum
)


def _not_ort_axis_chatter(record: logging.LogRecord) -> bool:
    # onnxruntime's quantizer warns, on the root logger, that a 1-D weight (a norm layer's) has no
    # channel axis to quantize along; it then quantizes it per tensor, which is what we want.
    return "is out-of-range for weight" not in record.getMessage()


@contextmanager
def quiet_toolchains(verbose: bool = False) -> Iterator[None]:
    """Hide the known warnings torch.onnx, torchao and onnxruntime print during an export.

    Their loggers go to ERROR and known messages (torch.export's `LeafSpec` and `_check_is_size`
    deprecations, onnxruntime's 1-D weight axis notice) are dropped, for the duration of the block only.
    ember's own logging and any error still show. With `verbose` nothing is hidden.

    Example:
        >>> with quiet_toolchains():
        ...     export_onnx("digits")
    """
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [lg.level for lg in loggers]
    root = logging.getLogger()
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    root.addFilter(_not_ort_axis_chatter)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r".*LeafSpec.* is deprecated", FutureWarning)
            # torch.onnx merges axes of equal constraints (two inputs' "batch") and says so
            warnings.filterwarnings("ignore", r".*will not be used, since it shares", UserWarning)
            # torch's own traced LSTM graph calls its deprecated torch._check_is_size (torch.onnx)
            warnings.filterwarnings("ignore", r"_check_is_size will be removed", FutureWarning)
            yield
    finally:
        root.removeFilter(_not_ort_axis_chatter)
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
