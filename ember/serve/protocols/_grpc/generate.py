"""Regenerate ``grpc_predict_v2_pb2.py`` and ``grpc_predict_v2_pb2_grpc.py`` (a dev-time tool).

Run ``python -m ember.serve.protocols._grpc.generate`` after editing ``grpc_predict_v2.proto``;
it needs ``pip install grpcio-tools`` (users never do: the generated modules are committed).

Two edits are made to protoc's output:

* the messages are built in a private ``DescriptorPool``, not the process-wide default one, because
  ``tritonclient.grpc`` (and KServe) register the same ``inference.*`` message names there, and two
  files defining one symbol in one pool fail to import;
* the ``_pb2_grpc`` module imports ``_pb2`` relatively, so it works wherever ember is installed.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

__all__ = ["generate"]

logger = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
_PROTO = "grpc_predict_v2.proto"
_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = (
    "# ember: a private pool, so tritonclient/kserve may define the same inference.* names.\n"
    "_POOL = _descriptor_pool.DescriptorPool()\n"
    "DESCRIPTOR = _POOL.AddSerializedFile("
)
_ABSOLUTE_IMPORT = "import grpc_predict_v2_pb2 as grpc__predict__v2__pb2"
_RELATIVE_IMPORT = "from . import grpc_predict_v2_pb2 as grpc__predict__v2__pb2"


def generate(out_dir: Path = _HERE) -> list[Path]:
    """Run protoc on the v2 proto and patch its output for ember.

    Args:
        out_dir: Where to write the two modules (default: next to the proto).

    Returns:
        The paths written.

    Example:
        >>> generate()  # doctest: +SKIP
    """
    from grpc_tools import protoc  # dev-time only

    args = ["protoc", f"-I{_HERE}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"]
    if protoc.main([*args, str(_HERE / _PROTO)]) != 0:
        raise RuntimeError(f"protoc failed on {_HERE / _PROTO}")
    pb2 = out_dir / "grpc_predict_v2_pb2.py"
    pb2_grpc = out_dir / "grpc_predict_v2_pb2_grpc.py"
    _replace_once(pb2, _DEFAULT_POOL, _PRIVATE_POOL)
    _replace_once(pb2_grpc, _ABSOLUTE_IMPORT, _RELATIVE_IMPORT)
    logger.info("wrote %s and %s", pb2, pb2_grpc)
    return [pb2, pb2_grpc]


def _replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if text.count(old) != 1:
        raise RuntimeError(
            f"Expected exactly one {old!r} in {path}; protoc's output format changed."
        )
    path.write_text(text.replace(old, new))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else _HERE)
