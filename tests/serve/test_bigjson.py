"""Big arrays of numbers in JSON bodies: parsed in chunks, exactly as orjson + numpy would."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from ember.serve import bigjson
from ember.serve.bigjson import RawArray, loads


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(bigjson, "CHUNK", 4096)  # many chunks from small test bodies


@pytest.mark.parametrize(
    "shape", [(3000,), (700, 4), (1, 3000), (5, 1, 600), (2, 3, 4, 50), (3000, 1)]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_big_arrays_come_back_as_raw_arrays_that_parse_like_orjson(shape, dtype):
    x = np.random.default_rng(0).standard_normal(shape) * 100
    x = x.astype(np.int64) if dtype is np.int64 else x
    body = orjson.dumps({"id": "[1, 2]", "data": x.tolist(), "small": [1, 2]})
    parsed = loads(body)
    assert isinstance(parsed["data"], RawArray) and parsed["data"].shape == list(shape)
    assert parsed["id"] == "[1, 2]" and parsed["small"] == [1, 2]
    expected = np.asarray(orjson.loads(body)["data"], dtype=dtype)
    got = parsed["data"].to_numpy(dtype)
    assert got.dtype == dtype and np.array_equal(got, expected)


def test_whitespace_and_brackets_inside_strings_are_left_alone():
    text = ("[" + "1, " * 3000 + "1]").encode()
    spaced = b"[\n " + b" ,\n ".join([b"[ 1.5 , -2e3 ]"] * 1000) + b" \n]"
    body = b'{"s": "' + text + b'", "t": "a\\"[' + b"2," * 3000 + b'", "d": ' + spaced + b"}"
    parsed = loads(body)
    assert isinstance(parsed["d"], RawArray) and parsed["d"].shape == [1000, 2]
    assert parsed["s"] == text.decode() and parsed["t"] == orjson.loads(body)["t"]
    assert parsed["d"].to_numpy(np.float64).tolist() == orjson.loads(body)["d"]


@pytest.mark.parametrize(
    "data",
    [
        "[[1, 2], [3]]" + ", [1, 2]" * 2000,  # ragged
        "[1, [2]]" + ", 1" * 3000,  # mixed depth
        "[[1, 2]]" + ", [1, 2]" * 2000 + ", true",  # not only numbers
    ],
)
def test_irregular_or_mixed_arrays_stay_plain_json(data):
    body = b'{"data": [' + data.encode() + b"]}"
    parsed = loads(body)
    assert not isinstance(parsed["data"], RawArray)
    assert parsed == orjson.loads(body)


@pytest.mark.parametrize(
    "broken",
    [b"[1, 2,, 3]", b"[1 2]", b"[01]", b"[1, 2]]", b"[[1, 2]5, [3, 4]]", b"[1e]"],
)
def test_invalid_numbers_are_refused(broken):
    body = b'{"data": ' + broken[:-1] + b", 7" * 3000 + broken[-1:] + b"}"
    with pytest.raises(ValueError):  # orjson.JSONDecodeError is one too
        parsed = loads(body)
        if isinstance(parsed["data"], RawArray):
            parsed["data"].to_numpy(np.float32)


def test_an_empty_inner_list_is_caught_and_ragged():
    body = orjson.dumps({"data": [[1.0]] * 3000 + [[]]})
    parsed = loads(body)
    with pytest.raises(ValueError):
        parsed["data"].to_numpy(np.float32)
    rows = orjson.dumps({"data": [[]] * 3000})
    assert np.asarray(loads(rows)["data"].to_numpy(np.float32)).shape == (3000, 0)


def test_values_that_do_not_fit_the_dtype_raise():
    body = orjson.dumps({"data": [1] * 3000 + [300]})
    with pytest.raises(OverflowError):
        loads(body)["data"].to_numpy(np.uint8)


def test_deeply_nested_documents_parse_without_recursion_errors():
    deep = b"[" * 1000 + b"1" + b"]" * 1000
    body = b'{"deep": ' + deep + b', "data": [' + b"1," * 5000 + b"1]}"
    parsed = loads(body)
    assert isinstance(parsed["data"], RawArray)
    node, depth = parsed["deep"], 0
    while isinstance(node, list):
        node, depth = node[0], depth + 1
    assert (node, depth) == (1, 1000)


def test_fractions_in_integer_data_raise_but_whole_floats_parse():
    body = orjson.dumps({"data": [1] * 3000 + [9.5]})
    with pytest.raises(ValueError, match="whole numbers, received 9.5"):
        loads(body)["data"].to_numpy(np.int64)
    assert loads(orjson.dumps({"data": [1] * 3000 + [9.0]}))["data"].to_numpy(np.int64)[-1] == 9
    assert loads(body)["data"].to_numpy(np.float32)[-1] == 9.5
