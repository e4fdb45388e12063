"""``_OrtRuntime``'s fast call path gives exactly ``session.run``'s outputs and errors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ember.serve.runtime import _binding_run, _OrtRuntime, ort_session


def _two_in_two_out(path: Path) -> Path:
    """y = a @ W + b (N, 3) and s = a + c (N, 4): two named inputs, two outputs, dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["a", "w", "b"], ["y"]),
            helper.make_node("Add", ["a", "c"], ["s"]),
        ],
        "two_in_two_out",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in ("a", "c")],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 4]),
        ],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def mlp_onnx(template_repo: Path) -> Path:
    """The serve tests' 4 -> 3 MLP as the exporter writes it (dynamo, dynamic batch)."""
    return template_repo / "mlp" / "1" / "model.onnx"


def _feed(rng: np.random.Generator, names: list[str], batch: int, width: int = 4) -> dict:
    return {n: rng.standard_normal((batch, width)).astype(np.float32) for n in names}


def _assert_same(actual: dict[str, np.ndarray], expected: list[np.ndarray], names: list[str]):
    assert list(actual) == names
    for name, want in zip(names, expected):
        assert actual[name].dtype == want.dtype
        np.testing.assert_array_equal(actual[name], want)


def test_run_matches_session_run_for_shapes_in_a_row(mlp_onnx: Path) -> None:
    runtime, session = _OrtRuntime(mlp_onnx), ort_session(mlp_onnx)
    rng = np.random.default_rng(1)
    for batch in (1, 5, 1, 64, 3, 1):
        feed = _feed(rng, ["input"], batch)
        _assert_same(runtime.run(feed), session.run(None, feed), ["output"])


def test_run_maps_several_inputs_and_outputs_by_name(tmp_path: Path) -> None:
    path = _two_in_two_out(tmp_path / "m.onnx")
    runtime, session = _OrtRuntime(path), ort_session(path)
    rng = np.random.default_rng(2)
    for batch in (1, 7, 1):
        feed = _feed(rng, ["a", "c"], batch)
        result = runtime.run(feed)
        _assert_same(result, session.run(None, feed), ["y", "s"])
        np.testing.assert_allclose(result["s"], feed["a"] + feed["c"], rtol=1e-6)


def test_run_from_concurrent_threads_matches_session_run(tmp_path: Path) -> None:
    path = _two_in_two_out(tmp_path / "m.onnx")
    runtime, session = _OrtRuntime(path), ort_session(path)
    rng = np.random.default_rng(3)
    feeds = [_feed(rng, ["a", "c"], batch) for batch in (1, 2, 16, 1, 5, 1, 64, 3) * 4]
    expected = [session.run(None, feed) for feed in feeds]

    def work(offset: int) -> int:
        checked = 0
        for step in range(200):
            i = (offset + step) % len(feeds)
            _assert_same(runtime.run(feeds[i]), expected[i], ["y", "s"])
            checked += 1
        return checked

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sum(pool.map(work, range(8))) == 8 * 200


def test_run_takes_the_binding_not_the_public_run(mlp_onnx: Path) -> None:
    runtime = _OrtRuntime(mlp_onnx)
    expected = ort_session(mlp_onnx).run(None, {"input": np.ones((2, 4), np.float32)})

    def public_run(*args: object) -> None:
        raise AssertionError("the fast path called InferenceSession.run")

    runtime._session.run = public_run
    _assert_same(runtime.run({"input": np.ones((2, 4), np.float32)}), expected, ["output"])


def test_binding_run_falls_back_to_the_public_run() -> None:
    class PublicOnly:
        def run(self, names: list, feed: dict, options: object = None) -> list:
            return [feed["input"] * 2]

    session = PublicOnly()
    assert _binding_run(session) == session.run


def test_binding_run_is_the_sessions_cxx_binding(mlp_onnx: Path) -> None:
    session = ort_session(mlp_onnx)
    assert _binding_run(session) == session._sess.run


def test_run_retries_through_session_run_when_the_provider_fails(mlp_onnx: Path) -> None:
    from onnxruntime.capi.onnxruntime_pybind11_state import EPFail

    runtime = _OrtRuntime(mlp_onnx)

    def failing_binding(*args: object) -> None:
        raise EPFail("provider failed")

    runtime._fast_run = failing_binding
    feed = {"input": np.ones((1, 4), np.float32)}
    _assert_same(runtime.run(feed), ort_session(mlp_onnx).run(None, feed), ["output"])


@pytest.mark.parametrize("feed", [{}, {"x": np.ones((1, 4), np.float32)}])
def test_run_with_missing_input_raises_session_runs_error(mlp_onnx: Path, feed: dict) -> None:
    with pytest.raises(ValueError, match=r"Required inputs \(\['input'\]\) are missing"):
        _OrtRuntime(mlp_onnx).run(feed)


def test_run_with_wrong_shape_or_dtype_raises(mlp_onnx: Path) -> None:
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    runtime = _OrtRuntime(mlp_onnx)
    with pytest.raises(InvalidArgument, match="invalid dimensions for input: input"):
        runtime.run({"input": np.ones((1, 5), np.float32)})
    with pytest.raises(InvalidArgument, match=r"Actual: \(tensor\(double\)\)"):
        runtime.run({"input": np.ones((1, 4), np.float64)})


def test_big_runs_shrink_the_arena_and_small_runs_do_not(mlp_onnx: Path) -> None:
    from ember.serve.runtime import SHRINK_ARENA_BYTES

    runtime = _OrtRuntime(mlp_onnx)
    used = []
    fast = runtime._fast_run
    runtime._fast_run = lambda names, feed, options: (
        used.append(options) or fast(names, feed, options)
    )
    small = {"input": np.ones((2, 4), np.float32)}
    big = {"input": np.ones((SHRINK_ARENA_BYTES // 16 + 1, 4), np.float32)}  # just over
    session = ort_session(mlp_onnx)
    _assert_same(runtime.run(small), session.run(None, small), ["output"])
    _assert_same(runtime.run(big), session.run(None, big), ["output"])
    key = "memory.enable_memory_arena_shrinkage"
    assert not _has_entry(used[0], key)
    assert used[1].get_run_config_entry(key) == "cpu:0"


def _has_entry(options: object, key: str) -> bool:
    try:
        return bool(options.get_run_config_entry(key))
    except Exception:  # onnxruntime raises for an entry never set
        return False


def test_model_version_runs_any_runtime_protocol_object_and_closes_it() -> None:
    import asyncio

    from ember.serve import ModelVersion, Runtime, TensorSpec

    class Doubler:
        platform = "custom"
        inputs = [TensorSpec("x", "FP32", [-1, 2])]
        outputs = [TensorSpec("y", "FP32", [-1, 2])]
        closed = False

        def run(self, inputs: dict) -> dict:
            return {"y": inputs["x"] * 2}

        def close(self) -> None:
            self.closed = True

    engine = Doubler()
    assert isinstance(engine, Runtime)

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            mv = ModelVersion("d", 1, Path("."), engine, pool)
            out = await mv.infer({"x": np.ones((3, 2), np.float32)})
            np.testing.assert_array_equal(out["y"], np.full((3, 2), 2, np.float32))
            assert mv.metadata()["platform"] == "custom"
            await mv.close()

    asyncio.run(main())
    assert engine.closed


def test_a_request_longer_than_the_packages_recorded_maximum_is_a_clear_400() -> None:
    import asyncio

    from ember.serve import ModelVersion, ServeError, TensorSpec

    class Embedder:  # stands in for BERT: 64 position embeddings
        platform = "custom"
        inputs = [TensorSpec("input_ids", "INT64", [-1, -1])]
        outputs = [TensorSpec("logits", "FP32", [-1, 2])]

        def run(self, inputs: dict) -> dict:
            assert inputs["input_ids"].shape[1] <= 64, "invalid expand shape"
            return {"logits": np.zeros((len(inputs["input_ids"]), 2), np.float32)}

        def close(self) -> None:
            pass

    manifest = {"signature": {"dynamic_axes": {"input_ids": {"1": "sequence"}},
                              "dims": {"batch": {"min": 1, "max": None},
                                       "sequence": {"min": 1, "max": 64}}}}  # fmt: skip

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            mv = ModelVersion("bert", 1, Path("."), Embedder(), pool, manifest=manifest)
            out = await mv.infer({"input_ids": np.ones((3, 64), np.int64)})
            assert out["logits"].shape == (3, 2)
            with pytest.raises(ServeError, match=r"axis 1 \(sequence\) takes at most 64, "
                               r"received 100") as error:  # fmt: skip
                await mv.infer({"input_ids": np.ones((1, 100), np.int64)})
            assert error.value.status == 400
            await mv.close()

    asyncio.run(main())


def test_a_bad_request_leaves_no_onnxruntime_log_line_on_stderr(tmp_path, capfd) -> None:
    # a token id past the vocabulary printed "[E:onnxruntime:...] ... Gather node" in colour
    # codes on the server's stderr for every such request (the client gets the 400 anyway)
    import onnx
    from onnx import TensorProto, helper

    table = helper.make_tensor("table", TensorProto.FLOAT, [4, 2], [0.0] * 8)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["out"])], "embed",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 2])], [table],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "embed.onnx")
    session = ort_session(tmp_path / "embed.onnx")
    with pytest.raises(Exception, match="out of data bounds"):
        session.run(None, {"ids": np.array([1, 99], np.int64)})
    assert "onnxruntime" not in capfd.readouterr().err
