"""KServe v2 gRPC protocol, driven by tritonclient.grpc against a real grpc.aio server."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from ember.serve.errors import ServeError  # noqa: E402
from ember.serve.protocols.kserve_grpc import start_grpc_server  # noqa: E402
from ember.serve.runtime import ModelVersion  # noqa: E402
from ember.serve.tensors import TensorSpec  # noqa: E402
from tests.plugins.waiting import free_port  # noqa: E402


class _ScaleRuntime:
    """y = x * scale and total = row sums; what a tiny ONNX/torch model would compute."""

    platform = "pytorch"

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.inputs = [TensorSpec("x", "FP32", [-1, 3])]
        self.outputs = [TensorSpec("y", "FP32", [-1, 3]), TensorSpec("total", "FP32", [-1, 1])]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        return {"y": x * np.float32(self.scale), "total": x.sum(axis=1, keepdims=True)}


class _EchoRuntime:
    platform = "pytorch"
    inputs = [TensorSpec("text", "BYTES", [-1])]
    outputs = [TensorSpec("upper", "BYTES", [-1]), TensorSpec("length", "INT64", [-1])]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        text = inputs["text"]
        upper = np.array([bytes(t).upper() for t in text], dtype=np.object_)
        return {"upper": upper, "length": np.array([len(t) for t in text], dtype=np.int64)}


class _BrokenRuntime(_ScaleRuntime):
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("kernel exploded")


class FakeRepository:
    """Follows the ModelRepository interface: get(name, version, label), status(), ready."""

    def __init__(self, versions: list[ModelVersion], labels: dict[str, dict[str, int]]) -> None:
        self.models: dict[str, dict[int, ModelVersion]] = {}
        for mv in versions:
            self.models.setdefault(mv.name, {})[mv.version] = mv
        self.labels = labels
        self.ready = True

    def get(self, name: str, version: int | None = None, label: str | None = None) -> ModelVersion:
        if name not in self.models:
            raise ServeError(404, f"Unknown model {name!r}. Available: {', '.join(self.models)}")
        versions = self.models[name]
        if label is not None:
            if label not in self.labels.get(name, {}):
                raise ServeError(404, f"Unknown label {label!r} for model {name!r}.")
            version = self.labels[name][label]
        if version is None:
            version = max(versions)
        if version not in versions:
            raise ServeError(404, f"Unknown version {version} of model {name!r}.")
        return versions[version]

    def status(self) -> list[dict]:
        return [
            {"name": name, "version": v, "state": "AVAILABLE"}
            for name, versions in self.models.items()
            for v in versions
        ]


class _LoopThread:
    """An asyncio loop in a thread: the server lives there, the sync client in the test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def repo():
    executor = ThreadPoolExecutor(max_workers=1)
    versions = [
        ModelVersion("toy", 1, Path("toy/1"), _ScaleRuntime(1.0), executor),
        ModelVersion("toy", 2, Path("toy/2"), _ScaleRuntime(2.0), executor),
        ModelVersion("echo", 1, Path("echo/1"), _EchoRuntime(), executor),
        ModelVersion("broken", 1, Path("broken/1"), _BrokenRuntime(1.0), executor),
    ]
    yield FakeRepository(versions, labels={"toy": {"stable": 1, "canary": 2}})
    executor.shutdown(wait=True)


@pytest.fixture(scope="module")
def url(repo):
    loop = _LoopThread()
    port = free_port()
    server = loop.run(start_grpc_server(repo, "127.0.0.1", port))
    yield f"127.0.0.1:{port}"
    loop.run(server.stop(None))
    loop.close()


@pytest.fixture
def client(url):
    with tritonclient_grpc.InferenceServerClient(url) as client:
        yield client


@pytest.fixture
def stub(url):
    with grpc.insecure_channel(url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _fp32_input(x: np.ndarray, name: str = "x"):
    tensor = tritonclient_grpc.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


X = np.arange(6, dtype=np.float32).reshape(2, 3)


def test_server_live_ready_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "ember"
    assert meta["version"]


def test_server_not_ready_while_repository_loads(client, repo):
    repo.ready = False
    try:
        assert not client.is_server_ready()
        assert client.is_server_live()
    finally:
        repo.ready = True


def test_model_metadata_has_dynamic_dims_and_all_versions(client):
    meta = client.get_model_metadata("toy", as_json=True)
    assert meta["name"] == "toy"
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"] == "pytorch"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "3"]}]
    assert [o["name"] for o in meta["outputs"]] == ["y", "total"]
    meta = client.get_model_metadata("toy", model_version="1")
    assert list(meta.inputs[0].shape) == [-1, 3]


def test_model_ready_per_version(client):
    assert client.is_model_ready("toy")
    assert client.is_model_ready("toy", "1")
    assert client.is_model_ready("toy", "stable")
    assert not client.is_model_ready("toy", "9")
    assert not client.is_model_ready("nope")


def test_infer_raw_fp32_returns_raw_output_contents(client):
    result = client.infer("toy", [_fp32_input(X)])
    response = result.get_response()
    assert response.model_name == "toy"
    assert response.model_version == "2"  # newest version by default
    assert [o.name for o in response.outputs] == ["y", "total"]
    assert len(response.raw_output_contents) == 2
    assert not response.outputs[0].HasField("contents")
    np.testing.assert_allclose(result.as_numpy("y"), X * 2)
    np.testing.assert_allclose(result.as_numpy("total"), X.sum(axis=1, keepdims=True))
    assert result.as_numpy("y").dtype == np.float32


def test_infer_typed_fp32_contents(stub):
    request = service_pb2.ModelInferRequest(model_name="toy", model_version="1", id="req-7")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    tensor.contents.fp32_contents.extend(X.reshape(-1).tolist())
    response = stub.ModelInfer(request)
    assert response.id == "req-7"
    assert response.model_version == "1"
    y = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(
        response.outputs[0].shape
    )
    np.testing.assert_allclose(y, X)


def test_infer_selects_requested_outputs(client):
    outputs = [tritonclient_grpc.InferRequestedOutput("total")]
    result = client.infer("toy", [_fp32_input(X)], outputs=outputs)
    assert [o.name for o in result.get_response().outputs] == ["total"]
    assert result.as_numpy("y") is None
    np.testing.assert_allclose(result.as_numpy("total"), [[3.0], [12.0]])


@pytest.mark.parametrize(("version", "scale"), [("1", 1.0), ("2", 2.0), ("stable", 1.0)])
def test_infer_model_version_and_label(client, version, scale):
    result = client.infer("toy", [_fp32_input(X)], model_version=version)
    np.testing.assert_allclose(result.as_numpy("y"), X * scale)
    assert result.get_response().model_version == ("1" if scale == 1.0 else "2")


def test_infer_bytes_round_trip(client):
    text = np.array([b"ab", b"xyz"], dtype=np.object_)
    tensor = tritonclient_grpc.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(text)
    result = client.infer("echo", [tensor])
    assert result.as_numpy("upper").tolist() == [b"AB", b"XYZ"]
    assert result.as_numpy("length").tolist() == [2, 3]


def _status(exc_info) -> str:
    return exc_info.value.status()


def test_unknown_model_is_not_found(client):
    with pytest.raises(InferenceServerException, match="Unknown model 'nope'") as exc:
        client.infer("nope", [_fp32_input(X)])
    assert _status(exc) == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException, match="Unknown version 9") as exc:
        client.get_model_metadata("toy", model_version="9")
    assert _status(exc) == "StatusCode.NOT_FOUND"


def test_bad_shape_is_invalid_argument(client):
    x = np.zeros((2, 4), dtype=np.float32)
    with pytest.raises(InferenceServerException, match=r"'x'.*expected shape \[-1, 3\]") as exc:
        client.infer("toy", [_fp32_input(x)])
    assert _status(exc) == "StatusCode.INVALID_ARGUMENT"
    assert "[2, 4]" in exc.value.message()


def test_bad_dtype_is_invalid_argument(client):
    tensor = tritonclient_grpc.InferInput("x", [2, 3], "FP64")
    tensor.set_data_from_numpy(X.astype(np.float64))
    with pytest.raises(
        InferenceServerException, match="expected datatype FP32, received FP64"
    ) as exc:
        client.infer("toy", [tensor])
    assert _status(exc) == "StatusCode.INVALID_ARGUMENT"


def test_unknown_output_is_invalid_argument(client):
    outputs = [tritonclient_grpc.InferRequestedOutput("logits")]
    with pytest.raises(InferenceServerException, match="Unknown output 'logits'.*y, total") as exc:
        client.infer("toy", [_fp32_input(X)], outputs=outputs)
    assert _status(exc) == "StatusCode.INVALID_ARGUMENT"


def _infer_error(stub, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as exc:
        stub.ModelInfer(request)
    return exc.value


def test_raw_size_mismatch_is_invalid_argument(stub):
    request = service_pb2.ModelInferRequest(model_name="toy")
    request.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    request.raw_input_contents.append(np.zeros(5, dtype=np.float32).tobytes())
    error = _infer_error(stub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs 24 bytes, received 20" in error.details()


def test_typed_count_mismatch_and_mixed_contents_are_invalid_argument(stub):
    request = service_pb2.ModelInferRequest(model_name="toy")
    request.inputs.add(name="x", datatype="FP32", shape=[2, 3]).contents.fp32_contents.extend([1.0])
    error = _infer_error(stub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs 6 elements, received 1" in error.details()
    request.raw_input_contents.append(X.tobytes())
    error = _infer_error(stub, request)
    assert "both `contents` and raw_input_contents" in error.details()


def test_unknown_datatype_and_fp16_contents_are_invalid_argument(stub):
    request = service_pb2.ModelInferRequest(model_name="toy")
    request.inputs.add(name="x", datatype="FLOAT", shape=[1, 3])
    error = _infer_error(stub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Unknown datatype 'FLOAT'. Choose one of:" in error.details()
    request.inputs[0].datatype = "FP16"
    assert "send it in raw_input_contents" in _infer_error(stub, request).details()


def test_raw_entry_count_must_match_inputs(stub):
    request = service_pb2.ModelInferRequest(model_name="toy")
    request.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    request.raw_input_contents.extend([X.tobytes(), X.tobytes()])
    error = _infer_error(stub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "received 2 entries for 1 inputs" in error.details()


def test_model_failure_is_internal(client):
    with pytest.raises(InferenceServerException, match="kernel exploded") as exc:
        client.infer("broken", [_fp32_input(X)])
    assert _status(exc) == "StatusCode.INTERNAL"


def test_own_proto_coexists_with_tritonclient_proto():
    from ember.serve.protocols._grpc import grpc_predict_v2_pb2 as pb

    theirs = service_pb2.ModelInferRequest(model_name="toy", raw_input_contents=[b"\x00" * 4])
    ours = pb.ModelInferRequest.FromString(theirs.SerializeToString())
    assert ours.model_name == "toy"
    assert ours.DESCRIPTOR.full_name == "inference.ModelInferRequest"
    assert pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name == (
        "inference.GRPCInferenceService"
    )


def test_start_grpc_server_rejects_a_bad_port(repo):
    with pytest.raises(ValueError, match="Received: port=70000"):
        asyncio.run(start_grpc_server(repo, "127.0.0.1", 70000))


def test_start_grpc_server_reports_a_busy_port(repo, url):
    busy = int(url.rsplit(":", 1)[1])  # the module's server holds it
    with pytest.raises(OSError, match=f"Could not bind the gRPC server to 127.0.0.1:{busy}"):
        asyncio.run(start_grpc_server(repo, "127.0.0.1", busy))


def _onnx_reference(model_dir: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir / "model.onnx"))
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.e2e
def test_real_server_serves_onnx_models_over_grpc(repo_dir, start_server):
    port = free_port()
    start_server(repo_dir, grpc_port=port)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    with tritonclient_grpc.InferenceServerClient(f"127.0.0.1:{port}") as client:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("mlp", "1") and not client.is_model_ready("mlp", "7")
        meta = client.get_model_metadata("mlp", as_json=True)
        assert meta["versions"] == ["1", "2"]
        assert meta["inputs"][0]["datatype"] == "FP32"
        assert meta["inputs"][0]["shape"] == ["-1", "4"]
        name_in, name_out = meta["inputs"][0]["name"], meta["outputs"][0]["name"]
        for version, folder in (("1", "1"), ("canary", "2")):
            result = client.infer("mlp", [_fp32_input(x, name_in)], model_version=version)
            assert result.get_response().model_version == folder
            expected = _onnx_reference(repo_dir / "mlp" / folder, x)
            np.testing.assert_allclose(result.as_numpy(name_out), expected, rtol=1e-5, atol=1e-5)
        with pytest.raises(InferenceServerException, match=name_in) as exc:
            client.infer("mlp", [_fp32_input(x[:, :3], name_in)])
        assert _status(exc) == "StatusCode.INVALID_ARGUMENT"
        with pytest.raises(InferenceServerException, match="Unknown model 'nope'") as exc:
            client.infer("nope", [_fp32_input(x, name_in)])
        assert _status(exc) == "StatusCode.NOT_FOUND"
