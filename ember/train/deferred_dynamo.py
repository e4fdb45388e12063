"""Eager training without importing torch._dynamo until something compiles.

Every torch.optim optimizer imports torch._dynamo (about 1 s: sympy, inductor's configuration,
most of torch.distributed) the first time it is built, stepped or saved, only for two things:
`torch._dynamo.disable(fn, wrapping=False)`, which `torch._disable_dynamo` calls to mark its
methods "never compile this", and `torch._dynamo.graph_break()`, called around every `step`.
While torch._dynamo has not been imported nothing can be compiled, so the mark changes nothing
and the graph break does nothing: in eager mode both are no-ops.

`deferred_dynamo()` puts a stand-in for torch._dynamo in place for the length of an eager fit.
It answers those two calls; anything else asked of it (`torch.compile`, `torch.export`, a
submodule import, any other attribute) imports the real torch._dynamo at once, in the
stand-in's place, and first forgets the marks it answered, so torch's wrappers build the real
ones on their next call. When the fit ends the stand-in is removed the same way: after it,
torch is exactly as if the stand-in had never been there.

A fit skips the stand-in when torch._dynamo is already imported, or when it compiles or runs
distributed (those import torch._dynamo anyway).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["deferred_dynamo"]

_NAME = "torch._dynamo"
_MARK = "__dynamo_disable"  # the attribute torch._disable_dynamo caches its wrapper in
_lock = threading.RLock()
_state: dict[str, Any] = {"depth": 0, "stand_in": None, "finder": None}


class _StandIn(types.ModuleType):
    """torch._dynamo as eager code sees it: two no-ops, and the real module for anything else."""

    def __init__(self, spec: Any) -> None:
        super().__init__(_NAME)
        # The real module's identity, so probes such as importlib.util.find_spec("torch._dynamo")
        # or inspect's scan of sys.modules get answers without loading it.
        self.__spec__, self.__loader__, self.__package__ = spec, spec.loader, _NAME
        self.__file__ = spec.origin
        self.__path__ = list(spec.submodule_search_locations or [])  # submodules: see _Finder
        self._answered: list[Callable] = []

    def graph_break(self, msg: str = "") -> None:
        """No-op: nothing is being traced, so there is no graph to break."""

    def disable(
        self, fn: Any = None, recursive: bool = True, *, reason: Any = None, wrapping: bool = True
    ) -> Any:
        if fn is not None and wrapping is False:  # torch._disable_dynamo's lazy mark
            self._answered.append(fn)
            return fn
        return _load_real().disable(fn, recursive, reason=reason, wrapping=wrapping)

    def __getattr__(self, name: str) -> Any:
        return getattr(_load_real(), name)


class _Existing(importlib.abc.Loader):
    """Hands the import system a module the real torch._dynamo already imported."""

    def __init__(self, module: types.ModuleType) -> None:
        self.module, self.spec = module, module.__spec__

    def create_module(self, spec: Any) -> types.ModuleType:
        return self.module

    def exec_module(self, module: types.ModuleType) -> None:
        module.__spec__ = self.spec  # the import system set ours: give back the real one


class _Finder(importlib.abc.MetaPathFinder):
    """Loads the real torch._dynamo before any of its submodules is imported."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if not name.startswith(_NAME + "."):
            return None
        _load_real()
        module = sys.modules.get(name)
        if module is None:
            return None  # not imported by the package itself: the normal finders find it
        return importlib.util.spec_from_loader(name, _Existing(module))


def _remove() -> None:
    """Take the stand-in out (sys.modules, the torch package, the finder) and its marks."""
    stand_in = _state["stand_in"]
    if stand_in is None:
        return
    _state["stand_in"] = None
    if sys.modules.get(_NAME) is stand_in:
        del sys.modules[_NAME]
    if torch.__dict__.get("_dynamo") is stand_in:
        del torch._dynamo
    if _state["finder"] in sys.meta_path:
        sys.meta_path.remove(_state["finder"])
    for fn in stand_in._answered:
        if fn.__dict__.get(_MARK) is fn:
            del fn.__dict__[_MARK]


def _load_real() -> types.ModuleType:
    with _lock:
        _remove()
        return importlib.import_module(_NAME)


def _supported() -> bool:
    """Whether torch marks its methods the way the stand-in answers (checked, not assumed)."""
    from torch import _compile

    consts = getattr(getattr(_compile, "_disable_dynamo", None), "__code__", None)
    nested = [c for c in (consts.co_consts if consts else ()) if isinstance(c, types.CodeType)]
    return any(_MARK in c.co_consts for c in nested)


@contextmanager
def deferred_dynamo(enabled: bool = True) -> Iterator[None]:
    """Keep torch._dynamo unimported inside the block unless something really needs it.

    Args:
        enabled: False does nothing (a compiled or distributed fit).

    Example:
        >>> with deferred_dynamo():
        ...     optimizer = torch.optim.Adam(model.parameters())  # no torch._dynamo import
    """
    with _lock:
        install = enabled and (_state["depth"] > 0 or (_NAME not in sys.modules and _supported()))
        if install:
            if _state["depth"] == 0:
                stand_in = _StandIn(importlib.util.find_spec(_NAME))
                _state["stand_in"], _state["finder"] = stand_in, _Finder()
                sys.modules[_NAME] = stand_in
                torch._dynamo = stand_in
                sys.meta_path.insert(0, _state["finder"])
            _state["depth"] += 1
    try:
        yield
    finally:
        if install:
            with _lock:
                _state["depth"] -= 1
                if _state["depth"] == 0:
                    _remove()
