"""The model graph TensorBoard shows: traced once per model and input shape, then reused.

`SummaryWriter.add_graph` traces the model with `torch.jit.trace` and then traces it a second
time to check the first (`check_trace`): ~0.1-0.2 s for a small model, on every `fit`. A graph
drawn for a person needs no check, and the same model object with the same structure and input
shapes has the same graph: a later `fit` of that model (a notebook, a sweep) reuses it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["model_graph"]

_CACHE_ATTR = "_ember_graph"  # on the module, like ember.compile's `_ember_compile`


def model_graph(model: nn.Module, example_input: Any) -> tuple[Any, Any]:
    """The `(GraphDef, RunMetadata)` pair `FileWriter.add_graph` writes, for `model` on the input.

    Args:
        model: the module to trace (put in eval mode while tracing, then restored).
        example_input: a tensor or a tuple of tensors, as the model's forward takes them.

    Returns:
        TensorBoard's graph protos, reused when this model's structure and the input's shapes
        and dtypes are those of the last call.

    Raises:
        Whatever `torch.jit.trace` raises for a model it cannot trace.

    Example:
        >>> graph, meta = model_graph(torch.nn.Linear(2, 1), torch.zeros(1, 2))
        >>> graph.node[0].op  # doctest: +SKIP
        'IO Node'
    """
    key = (repr(model), _signature(example_input))
    cached = model.__dict__.get(_CACHE_ATTR)
    if cached is not None and cached[0] == key:
        return cached[1]
    from tensorboard.compat.proto.config_pb2 import RunMetadata
    from tensorboard.compat.proto.graph_pb2 import GraphDef
    from tensorboard.compat.proto.step_stats_pb2 import DeviceStepStats, StepStats
    from tensorboard.compat.proto.versions_pb2 import VersionDef
    from torch.utils.tensorboard._pytorch_graph import parse

    was_training = model.training
    model.train(False)
    try:
        # strict=False: outputs may be dicts (Hugging Face's ModelOutput); the graph only draws.
        if isinstance(example_input, dict):  # named inputs, as the loop calls it: model(**x)
            trace = torch.jit.trace(
                model, example_kwarg_inputs=example_input, check_trace=False, strict=False
            )
        else:
            trace = torch.jit.trace(model, example_input, check_trace=False, strict=False)
    finally:
        model.train(was_training)
    torch._C._jit_pass_inline(trace.graph)
    nodes = parse(trace.graph, trace, example_input)
    # What torch's add_graph writes: the device in TensorBoard's run metadata is always the CPU.
    meta = RunMetadata(step_stats=StepStats(dev_stats=[DeviceStepStats(device="/device:CPU:0")]))
    result = (GraphDef(node=nodes, versions=VersionDef(producer=22)), meta)
    model.__dict__[_CACHE_ATTR] = (key, result)
    return result


def _signature(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape), value.dtype, value.device.type)
    if isinstance(value, (tuple, list)):
        return tuple(_signature(v) for v in value)
    return type(value).__name__
