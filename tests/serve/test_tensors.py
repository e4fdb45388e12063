"""Wire tensors: datatypes, JSON/binary decoding, signature checks."""

from __future__ import annotations

import numpy as np
import pytest

from ember.serve.errors import ServeError, brief
from ember.serve.tensors import (
    TensorSpec,
    check_inputs,
    datatype_of,
    decode_binary,
    decode_tensor,
    numpy_dtype,
    values_array,
)


def test_datatypes_round_trip():
    for name in ("BOOL", "UINT8", "INT8", "INT32", "INT64", "FP16", "FP32", "FP64"):
        assert datatype_of(numpy_dtype(name)) == name
    with pytest.raises(ServeError, match="Unknown datatype 'F32'. Choose one of"):
        numpy_dtype("F32")


def test_decode_flat_nested_and_errors():
    flat = decode_tensor("x", "INT64", [2, 2], [1, 2, 3, 4])
    nested = decode_tensor("x", "INT64", [2, 2], [[1, 2], [3, 4]])
    assert flat.dtype == np.int64 and np.array_equal(flat, nested)
    with pytest.raises(ServeError, match=r"shape \[2, 3\] needs 6 elements, received 4") as exc:
        decode_tensor("x", "FP32", [2, 3], [1, 2, 3, 4])
    assert exc.value.status == 400
    with pytest.raises(ServeError, match="'data' must be a list"):
        decode_tensor("x", "FP32", [1], {"a": 1})
    with pytest.raises(ServeError, match="'shape' must be a list of non-negative integers"):
        decode_tensor("x", "FP32", [-1], [1])


def test_decode_binary():
    raw = np.arange(6, dtype=np.float32).tobytes()
    assert decode_binary("x", "FP32", [2, 3], raw).tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ServeError, match="needs 24 bytes, received 23"):
        decode_binary("x", "FP32", [2, 3], raw[:-1])


def test_check_inputs_names_expected_and_received():
    specs = [TensorSpec("a", "FP32", [-1, 2]), TensorSpec("b", "INT64", [-1])]
    good = {"a": np.zeros((3, 2), np.float32), "b": np.zeros(3, np.int64)}
    check_inputs(specs, good)
    with pytest.raises(ServeError, match="Missing input 'b'"):
        check_inputs(specs, {"a": good["a"]})
    with pytest.raises(ServeError, match="expected datatype INT64, received FP32"):
        check_inputs(specs, {**good, "b": np.zeros(3, np.float32)})
    with pytest.raises(
        ServeError, match=r"expected shape \[-1, 2\] \(-1 = any\), received \[3, 5\]"
    ):
        check_inputs(specs, {**good, "a": np.zeros((3, 5), np.float32)})
    with pytest.raises(ServeError, match=r"Unknown input\(s\) \['c'\]"):
        check_inputs(specs, {**good, "c": good["b"]})


def test_spec_parse_accepts_every_spelling():
    assert TensorSpec.parse("x", "tensor(float)", ["batch", 4]).to_dict() == {
        "name": "x", "datatype": "FP32", "shape": [-1, 4],
    }  # fmt: skip
    assert TensorSpec.parse("x", "float32", [None]).datatype == "FP32"
    assert TensorSpec.parse("x", "int64", [3]).datatype == "INT64"


def test_values_array_converts_rows_and_names_the_input_when_they_do_not_fit():
    from ember.serve.tensors import values_array

    assert values_array("x", "INT64", [[1, 2], [3, 4]]).dtype == np.int64
    with pytest.raises(ServeError, match="Input 'x': values do not fit FP32"):
        values_array("x", "FP32", [[1, 2], [3]])


@pytest.mark.parametrize(
    "data, what",
    [([1.0, "2"], "a string"), ([1.0, True], "a boolean"), ([[1.0], [None]], "null")],
)
@pytest.mark.parametrize("datatype", ["FP32", "FP16", "INT64", "UINT8"])
def test_numeric_inputs_refuse_strings_and_booleans(data, what, datatype):
    shape = [2] if isinstance(data[0], float) else [2, 1]
    if what == "null" and datatype.startswith("FP"):  # null is NaN in float data
        assert np.isnan(decode_tensor("x", datatype, shape, data)[1, 0])
        return
    with pytest.raises(ServeError, match=f"Input 'x': {datatype} data must be JSON numbers, "
                       f"received {what}") as info:  # fmt: skip
        decode_tensor("x", datatype, shape, data)
    assert info.value.status == 400
    with pytest.raises(ServeError, match="must be JSON numbers"):
        values_array("x", datatype, [data])


def test_bool_inputs_still_take_booleans():
    assert decode_tensor("b", "BOOL", [2], [True, False]).tolist() == [True, False]
    assert values_array("b", "BOOL", [[True], [False]]).dtype == np.bool_


@pytest.mark.parametrize("shape", [[0, 4611686018427387904], [2**21] * 3, [1] * 33])
def test_shapes_past_numpy_limits_are_400_before_numpy_sees_them(shape):
    with pytest.raises(ServeError, match="'x': shape .* is too large") as info:
        decode_tensor("x", "FP32", shape, [])
    assert info.value.status == 400
    assert decode_tensor("x", "FP32", [0, 2**30], []).shape == (0, 2**30)


def test_errors_echo_only_a_prefix_of_huge_values():
    with pytest.raises(
        ServeError, match=r"Unknown datatype 'FFFF.*\(10000000 characters\)"
    ) as info:
        decode_tensor("x", "F" * 10_000_000, [1], [1])
    assert len(info.value.message) < 400
    with pytest.raises(ServeError) as info:
        decode_tensor("n" * 10_000_000, "FP32", [2], [1])
    assert len(info.value.message) < 400
    assert len(ServeError(400, "y" * 10**6).message) < 2100
    assert brief(list(range(10**6))) == "[0, 1, 2, 3, 4, 5, 6, 7, ...]"


def test_data_nested_past_numpy_dimensions_is_400_not_a_recursion_error():
    deep = [1.0]
    for _ in range(900):
        deep = [deep]
    with pytest.raises(ServeError, match="nested deeper than 32 lists"):
        decode_tensor("x", "FP32", [1], deep)


@pytest.mark.parametrize("datatype", ["INT64", "INT32", "UINT8"])
def test_integer_inputs_refuse_fractions_instead_of_truncating_them(datatype):
    # token id 9.5 was served as 9
    with pytest.raises(ServeError, match=f"Input 'ids': {datatype} data must be whole numbers, "
                       r"received 9.5") as info:  # fmt: skip
        decode_tensor("ids", datatype, [1, 2], [[1, 9.5]])
    assert info.value.status == 400
    with pytest.raises(ServeError, match="whole numbers"):
        values_array("ids", datatype, [[1, 9.5]])
    assert decode_tensor("ids", datatype, [2], [9.0, 1]).tolist() == [9, 1]
