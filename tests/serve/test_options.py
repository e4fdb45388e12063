"""``ServeOptions``: one set of options shared by ``serve``, ``run``, the worker group and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ember.serve
from ember.serve import BatchingConfig, ServeOptions


def test_options_build_batching_and_round_trip_through_json(tmp_path: Path) -> None:
    options = ServeOptions(port=0, max_batch_size=8, adaptive_batching=True, token_file=tmp_path)
    assert options.batching == BatchingConfig(8, 0.0, True, 50.0)
    data = json.loads(json.dumps(options.to_dict()))
    assert data["token_file"] == str(tmp_path)
    assert ServeOptions.from_dict(data) == options.replace(token_file=str(tmp_path))


@pytest.mark.parametrize("call", ["serve", "build", "from_dict"])
def test_an_unknown_option_names_itself_and_the_allowed_ones(call: str, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"'prot'.*Choose from: host, port, grpc_port"):
        if call == "serve":
            ember.serve.serve(tmp_path, prot=80)  # fails before anything starts
        elif call == "build":
            ServeOptions.build(None, {"prot": 80})
        else:
            ServeOptions.from_dict({"prot": 80})
    with pytest.raises(TypeError, match="expected `options` to be a ServeOptions"):
        ServeOptions.build({"port": 1}, {})  # type: ignore[arg-type]


def test_serve_hands_one_options_object_to_the_worker_group(monkeypatch, tmp_path) -> None:
    import ember.serve.scale.workers as workers

    seen = {}
    monkeypatch.setattr(
        workers, "serve_workers", lambda path, **kw: seen.update(kw, path=path) or 0
    )
    base = ServeOptions(port=0, body_timeout=5.0, workers=2)
    assert ember.serve.serve(tmp_path, base, grpc_port=None) == 0
    assert seen["workers"] == 2 and seen["path"] == tmp_path
    assert seen["options"] == base.replace(grpc_port=None)


def test_a_worker_group_writes_every_option_for_its_workers(template_repo, tmp_path) -> None:
    from ember.serve.scale import WorkerGroup

    options = ServeOptions(port=0, grpc_port=None, management_port=None, body_timeout=7.5,
                           max_batch_size=4, strict_readiness=True)  # fmt: skip
    with WorkerGroup(template_repo, workers=2, options=options) as group:
        config = json.loads(group.config_file.read_text())
    for key in ("path", "state_dir", "rest_fd"):
        config.pop(key)
    worker = ServeOptions.from_dict(config)  # what each worker runs with
    assert worker.body_timeout == 7.5 and worker.max_batch_size == 4 and worker.strict_readiness
    assert worker.token == group.token and worker.management_port == 0 and worker.workers == 1
    assert worker.port == int(group.urls["rest"].rsplit(":", 1)[1])


def test_serve_and_run_show_every_option_as_a_keyword() -> None:
    import inspect

    serve_params = inspect.signature(ember.serve.serve).parameters
    run_params = inspect.signature(ember.serve.run).parameters
    for name in ServeOptions.names():
        assert serve_params[name].default == getattr(ServeOptions(), name)
        assert name in run_params
    assert run_params["grpc_port"].default is None  # run() leaves gRPC off unless asked
