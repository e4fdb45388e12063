"""DDP / FSDP on torch.distributed (gloo on CPU; NCCL when >= 2 GPUs), launched through torchrun.

This file is also the worker script: `python -m torch.distributed.run ... test_distributed.py
<scenario> <out_dir> <accelerator>` runs one scenario per process and rank 0 writes results
(safetensors weights, JSON) that the tests compare with a one-process run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.train.distributed import DDPStrategy, FSDPStrategy, SingleDevice, get_strategy
from ember.train.launch import detect_environment, free_port, relaunch, torchrun_command

ROOT = Path(__file__).resolve().parents[2]
THIS = Path(__file__).resolve()
BATCH, STEPS = 16, 6  # global batch; 64 samples -> 4 steps per epoch, so an epoch boundary too

ACCELERATORS = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            torch.cuda.device_count() < 2, reason="needs >= 2 CUDA devices (NCCL)"
        ),
    ),
]


# -- the tiny problem, shared by the workers and the one-process references ----------------------
def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    return ember.compile(net, "sgd", "mse", lr=0.1)


def _loader(batch_size: int) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g)
    y = torch.sin(x.sum(1, keepdim=True))
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)


def _train(root, steps=STEPS, batch_size=BATCH, every=None, ckpt_path=None, **kwargs):
    model = _model()
    callbacks = [ember.ModelCheckpoint(every_n_train_steps=every)] if every else None
    trainer = ember.Trainer(
        max_steps=steps,
        seed=0,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=every is not None,
        callbacks=callbacks,
        default_root_dir=str(root),
        **kwargs,
    )
    trainer.fit(model, _loader(batch_size), ckpt_path=ckpt_path)
    return model, trainer


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _assert_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        diff = (a[k].float() - b[k].float()).abs().max().item()
        assert diff <= atol, f"{k}: max difference {diff} > {atol}"


# -- worker side (runs under torchrun) -----------------------------------------------------------
def _save(out: Path, name: str, state: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, out / name)


def _worker_ddp(out: Path, accelerator: str) -> None:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = BATCH // world  # the global batch is split over the ranks
    model, trainer = _train(out / "eq", batch_size=local, strategy="ddp", accelerator=accelerator)
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.strategy.world_size == world
    losses = {"rank": rank, "loss": trainer.logged_metrics["loss"]}
    (out / f"loss-{rank}.json").write_text(json.dumps(losses))
    if rank == 0:
        _save(out, "ddp.safetensors", model.state_dict())
    # Exact resume: 2k steps in one go against k steps, then resume to 2k from "last".
    kw = dict(batch_size=local, every=3, strategy="ddp", accelerator=accelerator)
    full, _ = _train(out / "full", **kw)
    _train(out / "resumed", steps=3, **kw)
    resumed, _ = _train(out / "resumed", ckpt_path="last", **kw)
    if rank == 0:
        _save(out, "full.safetensors", full.state_dict())
        _save(out, "resumed.safetensors", resumed.state_dict())


def _worker_fsdp(out: Path, accelerator: str) -> None:
    world = int(os.environ["WORLD_SIZE"])
    model, trainer = _train(
        out / "fsdp",
        batch_size=BATCH // world,
        every=STEPS,
        strategy="fsdp",
        accelerator=accelerator,
    )
    assert isinstance(trainer.strategy, FSDPStrategy)
    state = trainer.strategy.model_state_dict(model)  # collective; rank 0 gets the full state
    if trainer.is_global_zero:
        _save(out, "fsdp.safetensors", state)
        last = trainer.checkpoint_callback.last_model_path
        (out / "fsdp.json").write_text(json.dumps({"checkpoint": last}))


def _worker_fail(out: Path, accelerator: str) -> None:
    class Explode(ember.Callback):
        def on_train_batch_end(self, trainer, module, logs, batch_idx):
            if trainer.strategy.rank == 1 and trainer.global_step == 2:
                raise RuntimeError("rank 1 exploded on purpose")

    model = _model()
    trainer = ember.Trainer(
        max_steps=50, strategy="ddp", accelerator=accelerator, logger=False, callbacks=[Explode()]
    )
    trainer.fit(model, _loader(8))  # rank 0 waits in an all-reduce that never completes


def _worker_relaunch(out: Path, accelerator: str) -> None:
    # Started with plain `python`: Trainer(devices=2) re-runs this script under torchrun.
    model, trainer = _train(out / "relaunch", batch_size=BATCH // 2, devices=2, accelerator="cpu")
    if trainer.is_global_zero:
        _save(out, "relaunch.safetensors", model.state_dict())
        (out / "relaunch.json").write_text(json.dumps({"world_size": trainer.strategy.world_size}))


WORKERS = {
    "ddp": _worker_ddp,
    "fsdp": _worker_fsdp,
    "fail": _worker_fail,
    "relaunch": _worker_relaunch,
}


# -- test side -----------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        *args,
    ]


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


class _Job:
    """A background command (its own process group, so teardown can stop every process in it)."""

    def __init__(self, cmds: list[list[str]], out: Path) -> None:
        self.out, self.start = out, time.monotonic()
        self.procs = [
            subprocess.Popen(
                cmd,
                env=_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            for cmd in cmds
        ]
        self._results: list[tuple[int, str]] | None = None

    def results(self, timeout: float = 300) -> list[tuple[int, str]]:
        """[(exit code, stdout + stderr)] per command; waits for them."""
        if self._results is None:
            outs = [p.communicate(timeout=timeout) for p in self.procs]
            self._results = [(p.returncode, o + e) for p, (o, e) in zip(self.procs, outs)]
            self.seconds = time.monotonic() - self.start
        return self._results

    def check_ok(self) -> Path:
        for code, text in self.results():
            assert code == 0, f"exit {code}\n{text[-6000:]}"
        return self.out

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _two_nodes(out: Path) -> list[list[str]]:
    rdzv = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d"]
    rdzv += ["--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "ember-test"]
    node = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *rdzv,
        str(THIS),
        "nodes",
        str(out),
        "cpu",
    ]
    return [node, node]


def _job_commands(name: str, out: Path) -> list[list[str]]:
    if name.startswith("ddp-"):
        return [_torchrun(str(THIS), "ddp", str(out), name[4:])]
    if name in ("fsdp", "fail"):
        return [_torchrun(str(THIS), name, str(out), "cpu")]
    if name == "example":
        example = str(ROOT / "examples" / "ddp_train.py")
        return [_torchrun(example, "--epochs", "1", "--root", str(out))]
    if name == "nodes":
        return _two_nodes(out)
    return [
        [sys.executable, str(THIS), "relaunch", str(out), "cpu"]
    ]  # no torchrun: ember starts it


# The job each end-to-end test reads (test name prefix -> job name).
_JOBS = {
    "test_ddp_matches_one_process_and_resumes_exactly[cpu]": "ddp-cpu",
    "test_ddp_matches_one_process_and_resumes_exactly[cuda]": "ddp-cuda",
    "test_fsdp_trains_and_checkpoint_loads_into_one_process": "fsdp",
    "test_failing_rank_stops_the_job_with_its_error": "fail",
    "test_example_runs_under_torchrun": "example",
    "test_two_nodes_through_c10d_rendezvous": "nodes",
    "test_devices_2_outside_torchrun_starts_the_processes": "relaunch",
}


@pytest.fixture(scope="module")
def jobs(request, tmp_path_factory):
    """Start every selected end-to-end job at once: they mostly wait (imports, rendezvous)."""
    selected = {
        _JOBS[item.name]
        for item in request.session.items
        if item.name in _JOBS and item.get_closest_marker("skipif") is None
    }
    if any(item.name.endswith("[cuda]") for item in request.session.items):
        if torch.cuda.device_count() >= 2:
            selected.add("ddp-cuda")
    started = {n: _Job(_job_commands(n, p := tmp_path_factory.mktemp(n)), p) for n in selected}
    yield started
    for job in started.values():
        job.stop()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    """One process, global batch, STEPS steps."""
    model, _ = _train(tmp_path_factory.mktemp("single"), accelerator="cpu")
    return _cpu_state(model)


@pytest.mark.e2e
@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_ddp_matches_one_process_and_resumes_exactly(jobs, reference, accelerator):
    out = jobs[f"ddp-{accelerator}"].check_ok()
    # (1) 2 ranks x batch B/2 == 1 process x batch B, after STEPS steps.
    _assert_close(_load(out / "ddp.safetensors"), reference, atol=1e-5)
    # Metrics are reduced across ranks: both ranks log the same epoch loss.
    losses = [json.loads((out / f"loss-{r}.json").read_text())["loss"] for r in (0, 1)]
    assert losses[0] == pytest.approx(losses[1], abs=0)
    # (3) exact resume under DDP: stop at step 3, resume from "last" to 6 == 6 in one go.
    _assert_close(_load(out / "resumed.safetensors"), _load(out / "full.safetensors"), 0)
    assert not list((out / "full").glob("*/version_1")), "ranks must share one run dir"


@pytest.mark.e2e
def test_fsdp_trains_and_checkpoint_loads_into_one_process(jobs, reference):
    from ember.train.checkpoint import load_checkpoint

    out = jobs["fsdp"].check_ok()
    trained = _load(out / "fsdp.safetensors")
    _assert_close(trained, reference, atol=1e-5)  # FSDP averages gradients like one process
    ckpt = load_checkpoint(json.loads((out / "fsdp.json").read_text())["checkpoint"])
    plain = _model()
    plain.load_state_dict(ckpt.model_state)  # a one-process model, no process group
    _assert_close(_cpu_state(plain), trained, atol=0)
    # ... and training resumes from it at world size 1 (optimizer state keyed by name).
    _, trainer = _train(out / "one", steps=STEPS + 2, ckpt_path=ckpt.path)
    assert trainer.global_step == STEPS + 2
    assert isinstance(trainer.strategy, SingleDevice)


@pytest.mark.e2e
def test_failing_rank_stops_the_job_with_its_error(jobs):
    job = jobs["fail"]
    [(code, text)] = job.results()
    assert code != 0
    assert "rank 1 exploded on purpose" in text
    assert job.seconds < 300  # torchrun stopped rank 0; the collective timeout (1800 s) never hit


@pytest.mark.e2e
def test_example_runs_under_torchrun(jobs):
    out = jobs["example"].check_ok()
    [(_, text)] = jobs["example"].results()
    assert "val_accuracy=" in text
    assert list(out.glob("*/version_0/checkpoints/last/meta.json"))


@pytest.mark.e2e
def test_two_nodes_through_c10d_rendezvous(jobs, reference):
    out = jobs["nodes"].check_ok()
    _assert_close(_load(out / "eq.safetensors"), reference, atol=1e-5)


@pytest.mark.e2e
def test_devices_2_outside_torchrun_starts_the_processes(jobs, reference):
    out = jobs["relaunch"].check_ok()
    assert json.loads((out / "relaunch.json").read_text()) == {"world_size": 2}
    _assert_close(_load(out / "relaunch.safetensors"), reference, atol=1e-5)


# -- in-process checks (no extra processes) ------------------------------------------------------
def test_detect_environment_reads_torchrun_variables():
    assert detect_environment({}) is None
    env = detect_environment(
        {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    )
    assert (env.rank, env.local_rank, env.world_size, env.local_world_size) == (3, 1, 4, 2)


def test_auto_is_single_device_in_one_process():
    strategy = get_strategy("auto", "cpu")
    assert isinstance(strategy, SingleDevice) and strategy.world_size == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"strategy": "dp"}, "Unknown strategy 'dp'. Choose one of: auto, single_device, ddp"),
        ({"devices": 0}, "expected a positive integer or 'auto'. Received: devices=0"),
        ({"devices": "2"}, "Received: devices='2'"),
        ({"num_nodes": 0}, "Received: num_nodes=0"),
        ({"num_nodes": 2}, "start multi-node jobs with torchrun on every node"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_strategy(**{"accelerator": "cpu", **kwargs})


def test_devices_must_match_the_launcher(monkeypatch):
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match="devices=3 but the launcher started 2 processes"):
        get_strategy("ddp", "cpu", devices=3)
    with pytest.raises(ValueError, match="strategy='single_device' cannot run in a job of 2"):
        get_strategy("single_device", "cpu")


def test_relaunch_refuses_to_rerun_pytest():
    with pytest.raises(RuntimeError, match="cannot be re-run.*torchrun --nproc-per-node N"):
        relaunch(2)


def test_torchrun_command_reruns_the_script():
    cmd = torchrun_command(3, ["/x/train.py", "--lr", "0.1"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[cmd.index("--nproc-per-node") + 1] == "3"
    assert cmd[-2:] == ["--lr", "0.1"]


def test_strategy_timeout_must_be_positive():
    with pytest.raises(ValueError, match="Received: timeout=0"):
        DDPStrategy(timeout=0)


def test_fsdp_in_one_process_checkpoints_full_state(tmp_path, reference):
    """FSDP at world size 1 (a private gloo group) trains like one process and saves plain state."""
    model, trainer = _train(tmp_path, every=STEPS, strategy="fsdp", accelerator="cpu")
    try:
        state = trainer.strategy.model_state_dict(model)
        assert all(type(v) is torch.Tensor for v in state.values())
        _assert_close(state, reference, atol=1e-5)
        last = trainer.checkpoint_callback.last_model_path
        _, again = _train(tmp_path, steps=STEPS + 1, strategy=trainer.strategy, ckpt_path=last)
        assert again.global_step == STEPS + 1
    finally:
        trainer.strategy.teardown()
    assert not torch.distributed.is_initialized()


def _main() -> None:
    scenario, out, accelerator = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    if scenario == "nodes":  # the 2-node test: DDP equivalence only
        world = int(os.environ["WORLD_SIZE"])
        model, _ = _train(out / "eq", batch_size=BATCH // world, accelerator=accelerator)
        if int(os.environ["RANK"]) == 0:
            _save(out, "eq.safetensors", model.state_dict())
        return
    WORKERS[scenario](out, accelerator)


if __name__ == "__main__":
    _main()
