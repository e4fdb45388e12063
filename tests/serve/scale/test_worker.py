"""One worker of a group: group readiness, hot reload waiting for the siblings."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from ember.serve.repository import ModelRepository
from ember.serve.scale.worker import GroupMember


def _ready_app(tmp_path: Path, repository_ready: bool):
    async def inner(scope, receive, send):  # the wrapped app answers everything else
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b"inner"})

    member = GroupMember(tmp_path, 0, "t" * 32)
    return member.wrap_app(inner, SimpleNamespace(ready=repository_ready), None), member


async def _get(app, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
        return await client.get(path)


def test_ready_only_when_the_whole_group_is(tmp_path):
    app, _ = _ready_app(tmp_path, repository_ready=True)
    assert asyncio.run(_get(app, "/v2/health/ready")).status_code == 503
    (tmp_path / "ready").touch()  # written by the parent when every worker is ready
    answer = asyncio.run(_get(app, "/v2/health/ready"))
    assert answer.status_code == 200 and answer.json() == {"ready": True}
    assert asyncio.run(_get(app, "/v2/models/x")).status_code == 418


def test_not_ready_while_this_worker_loads_even_if_the_group_file_is_there(tmp_path):
    app, _ = _ready_app(tmp_path, repository_ready=False)
    (tmp_path / "ready").touch()
    assert asyncio.run(_get(app, "/v2/health/ready")).status_code == 503


def test_retire_gate_waits_until_the_sibling_serves_the_version(repo_dir, start_server, tmp_path):
    token = "s" * 32
    sibling = start_server(repo_dir, management_port=0, token=token)
    state = tmp_path / "state"
    state.mkdir()
    record = {"index": 1, "pid": 1, "control": sibling.info["management"]}
    (state / "worker-1.json").write_text(json.dumps(record))
    member = GroupMember(state, 0, token, gate_timeout=300)

    async def scenario() -> None:
        await asyncio.wait_for(member.retire_gate("half_plus_three", [123]), 10)  # served
        gate = asyncio.ensure_future(member.retire_gate("half_plus_three", [124]))
        await asyncio.sleep(0.5)
        assert not gate.done()  # the sibling does not serve 124 yet
        shutil.copytree(repo_dir / "half_plus_three" / "123", repo_dir / "half_plus_three" / "124")
        await asyncio.wait_for(gate, 30)

    asyncio.run(scenario())


def test_a_dead_sibling_does_not_hold_the_gate(tmp_path):
    record = {"index": 1, "pid": 1, "control": "http://127.0.0.1:9"}  # nothing listens
    (tmp_path / "worker-1.json").write_text(json.dumps(record))
    member = GroupMember(tmp_path, 0, "t" * 32, gate_timeout=300)
    asyncio.run(asyncio.wait_for(member.retire_gate("m", [2]), 10))


def test_hot_reload_keeps_the_old_version_until_the_gate_opens(repo_dir):
    calls, opened = [], None

    async def gate(name: str, versions: list[int]) -> None:
        calls.append((name, versions))
        await opened.wait()

    async def scenario() -> None:
        nonlocal opened
        opened = asyncio.Event()
        repo = ModelRepository(repo_dir, poll_interval=0.05, retire_gate=gate)
        await repo.start()
        try:
            src = repo_dir / "half_plus_three"
            shutil.copytree(src / "123", src / "124")
            while not calls:
                await asyncio.sleep(0.05)
            assert calls[0] == ("half_plus_three", [124])
            states = {r["version"]: r["state"] for r in repo.status("half_plus_three")}
            assert states == {123: "AVAILABLE", 124: "AVAILABLE"}  # 123 waits for the group
            opened.set()
            while {r["version"]: r["state"] for r in repo.status("half_plus_three")}[123] != "END":
                await asyncio.sleep(0.05)
        finally:
            await repo.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


@pytest.mark.parametrize("bad", [0, -1, "many", "1.5", True])
def test_workers_must_be_a_positive_integer_or_auto(bad):
    from ember.serve.scale import resolve_workers

    with pytest.raises(ValueError, match="expected a positive integer or 'auto'"):
        resolve_workers(bad)


def test_auto_is_one_worker_per_core():
    import os

    from ember.serve.scale import resolve_workers

    assert resolve_workers("auto") == len(os.sched_getaffinity(0))
    assert resolve_workers(" 3") == 3


def test_a_group_without_management_writes_no_token_file(template_repo, tmp_path):
    from ember.serve.scale import WorkerGroup

    token_file = tmp_path / "token"
    with WorkerGroup(template_repo, workers=2, port=0, grpc_port=None, management_port=None,
                     token_file=token_file) as group:  # fmt: skip
        assert len(group.token) >= 32 and not token_file.exists()
        config = json.loads(group.config_file.read_text())
        assert (
            config["token"] == group.token and oct(group.config_file.stat().st_mode)[-3:] == "600"
        )
    assert not group.state_dir.exists()


def test_a_group_refuses_a_missing_repository_and_a_bad_port(tmp_path):
    from ember.serve.scale import WorkerGroup

    with pytest.raises(ValueError, match="does not exist"):
        WorkerGroup(tmp_path / "missing", workers=2)
    group = WorkerGroup(tmp_path, workers=2, port=-1)
    with pytest.raises(ValueError, match="invalid port"), group:
        pass
    assert not group.state_dir.exists()  # cleaned up
