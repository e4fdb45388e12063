"""Fuzzing: schemathesis against the running server's OpenAPI schema, and hypothesis against
``ember.serve.tensors`` decoding.

Every REST operation (KServe v2, TF Serving, TorchServe, health, metrics) gets positive and
negative cases (``10 x --reliability-scale`` of each per operation); path parameters are drawn
from the real model names, versions and labels as well as from the schema, so bodies reach the
decoders of real models. No case may get a 5xx; every 4xx is ``{"error": "..."}``; the server
answers correctly at the end.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from ember.serve.errors import ServeError
from ember.serve.tensors import decode_tensor, numpy_dtype
from tests.plugins.serving import ServerThread

EXAMPLES_PER_SCALE = 10
REAL_VALUES = {
    "name": ["mlp", "half_plus_three", "nope"],
    "version": ["1", "2", "123", "99"],
    "label": ["stable", "canary", "nope"],
}
ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
_CASES = {"count": 0, "by_status": {}, "modes_with_nothing_to_vary": 0}


def _with_real_values(raw: dict) -> dict:
    """The served schema, with model names drawn from the real ones (random names only reach
    the 404 branch) and versions and labels from the real ones or the schema's pattern."""
    raw = copy.deepcopy(raw)
    for operations in raw["paths"].values():
        for op in operations.values():
            for param in op.get("parameters", []):
                if param["name"] == "name":
                    param["schema"] = {"type": "string", "enum": REAL_VALUES["name"]}
                elif param["name"] in REAL_VALUES:
                    param["schema"] = {"anyOf": [{"enum": REAL_VALUES[param["name"]]},
                                                 param["schema"]]}  # fmt: skip
    return raw


@pytest.fixture
def fuzz_target(tmp_path_factory, template_repo, reliability_scale, figures):
    """A server over the test repository (max batch 8, 1 ms queue delay) and its schema."""
    import shutil

    repo = Path(shutil.copytree(template_repo, tmp_path_factory.mktemp("fuzz") / "models"))
    server = ServerThread(repo, host="127.0.0.1", port=0, poll_interval=0,
                                         max_batch_size=8, max_queue_delay_ms=1.0)  # fmt: skip
    server.start()
    raw = httpx.get(server.url + "/openapi.json").json()
    schema = schemathesis.openapi.from_dict(_with_real_values(raw))
    schema.config.update(base_url=server.url)
    yield server, schema
    try:
        # Alive and still right after every case.
        assert httpx.get(server.url + "/v2/health/ready").status_code == 200
        answer = httpx.post(server.url + "/v2/models/mlp/infer", json=ROW)
        assert answer.status_code == 200 and answer.json()["model_version"] == "2"
        operations = sum(len(ops) for ops in raw["paths"].values())
        figures["fuzz_http"] = {"operations": operations, **_CASES}
    finally:
        server.stop()


@pytest.mark.e2e
def test_every_operation_never_answers_5xx(fuzz_target, reliability_scale):
    server, schema = fuzz_target
    examples = EXAMPLES_PER_SCALE * reliability_scale
    session = requests.Session()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 28  # KServe v2, TF Serving, TorchServe, health, metrics
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                response = case.call(base_url=server.url, session=session, timeout=30)
                _CASES["count"] += 1
                key = str(response.status_code)
                _CASES["by_status"][key] = _CASES["by_status"].get(key, 0) + 1
                where = f"{case.method} {case.formatted_path}: {response.text[:300]}"
                assert response.status_code < 500, where
                if response.status_code >= 400:  # {"error": ...}, or a model-ready answer
                    body = response.json()
                    assert isinstance(body.get("error"), str) or body.get("ready") is False, where

            try:
                _fuzz(check, examples)
            except Unsatisfiable:  # nothing to vary (no parameters, no body) in this mode
                _CASES["modes_with_nothing_to_vary"] += 1


# --------------------------------------------------------------------------- tensor decoding
DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BYTES"]  # fmt: skip
_SCALARS = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.text(max_size=4)
    | st.none()
)
_DATA = st.recursive(st.lists(_SCALARS, max_size=12), lambda inner: st.lists(inner, max_size=4),
                     max_leaves=40)  # fmt: skip
_SHAPES = st.lists(st.integers(min_value=-2, max_value=6), max_size=4) | st.sampled_from(
    [None, "2,2", [2.0, 2], [True], 3, [[2]]]
)


def _decode_or_400(datatype: Any, shape: Any, data: Any) -> np.ndarray | None:
    try:
        return decode_tensor("x", datatype, shape, data)
    except ServeError as exc:
        assert exc.status == 400 and ("'x'" in exc.message or "datatype" in exc.message)
        return None


def _fuzz(test: Any, examples: int) -> None:
    settings(max_examples=examples, deadline=None, database=None,
             suppress_health_check=list(HealthCheck))(test)()  # fmt: skip


@pytest.mark.e2e
def test_decode_random_input_gives_an_array_or_a_400(reliability_scale, figures):
    """Anything a JSON body can hold as datatype, shape and data: an array of exactly that
    datatype and shape, or a ServeError 400; never another exception."""

    @given(
        datatype=st.sampled_from(DATATYPES) | st.text(max_size=6) | st.integers(),
        shape=_SHAPES,
        data=_DATA | _SCALARS | st.dictionaries(st.text(max_size=3), _SCALARS, max_size=2),
    )
    def check(datatype: Any, shape: Any, data: Any) -> None:
        array = _decode_or_400(datatype, shape, data)
        _count(figures, array is not None)
        if array is not None:
            assert array.dtype == numpy_dtype(datatype)
            assert list(array.shape) == list(shape)

    _fuzz(check, 300 * reliability_scale)


@pytest.mark.e2e
def test_decode_well_formed_values_round_trips(reliability_scale, figures):
    """Values of the right count (flat or nested; NaN and infinities for floats) decode exactly;
    a wrong count is a 400 naming both counts."""

    @given(
        datatype=st.sampled_from([d for d in DATATYPES if d != "BYTES"]),
        shape=st.lists(st.integers(min_value=0, max_value=4), max_size=3),
        nested=st.booleans(),
        extra=st.integers(min_value=-2, max_value=2),
        special=st.sampled_from([None, math.nan, math.inf, -math.inf]),
        seed=st.integers(min_value=0, max_value=2**16),
    )
    def check(datatype: str, shape: list, nested: bool, extra: int, special: Any, seed: int):
        dtype, size = numpy_dtype(datatype), math.prod(shape)
        values = np.random.default_rng(seed).integers(0, 100, size=max(size + extra, 0))
        flat = values.astype(dtype).tolist()
        if special is not None and dtype.kind == "f" and flat:
            flat[0] = special
        nest = nested and shape and not extra  # a 0-d value is still sent as a list: [v]
        data = np.asarray(flat, dtype).reshape(shape).tolist() if nest else flat
        array = _decode_or_400(datatype, shape, data)
        _count(figures, array is not None)
        if extra and size + extra >= 0:
            assert array is None
            with pytest.raises(ServeError, match=f"needs {size} elements, received {len(flat)}"):
                decode_tensor("x", datatype, shape, data)
            return
        if extra:
            return
        assert array is not None and array.dtype == dtype and list(array.shape) == shape
        expected = np.asarray(flat, dtype).reshape(shape)
        assert np.array_equal(array, expected, equal_nan=dtype.kind == "f")

    _fuzz(check, 300 * reliability_scale)


def _count(figures: dict, decoded: bool) -> None:
    tally = figures.setdefault("fuzz_decode", {"cases": 0, "decoded": 0, "refused_400": 0})
    tally["cases"] += 1
    tally["decoded" if decoded else "refused_400"] += 1
