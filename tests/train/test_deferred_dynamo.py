"""An eager fit runs torch.optim without importing torch._dynamo, and changes nothing else.

Each case runs in a fresh Python process: this test process has imported torch._dynamo long ago.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

_FIT = """
import json, sys
import numpy as np
import torch
import ember
from ember import layers

torch.manual_seed(0)
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 8)).astype("float32")
y = (x[:, 0] > 0).astype("int64")
model = ember.Sequential([layers.Input((8,)), layers.Dense(16, activation="relu"), layers.Dense(2)])
model.compile(optimizer="adam", loss="cross_entropy", metrics=["accuracy"], lr=1e-2)
"""


def _run(tmp_path: Path, body: str) -> dict:
    script = tmp_path / "case.py"
    script.write_text(_FIT + textwrap.dedent(body))
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_eager_fit_leaves_dynamo_unimported_and_trains_bit_exact(tmp_path):
    body = """
    {pre}
    history = model.fit(x, y, epochs=2, batch_size=16, seed=3, verbose=0,
                        default_root_dir="runs", validation_data=(x, y))
    weights = [p.detach().flatten().tolist() for p in model.parameters()]
    print(json.dumps({{"dynamo": "torch._dynamo" in sys.modules, "sympy": "sympy" in sys.modules,
                      "weights": weights, "loss": history.history["loss"]}}))
    """
    deferred = _run(tmp_path, body.format(pre=""))
    loaded = _run(tmp_path, body.format(pre="import torch._dynamo"))
    assert deferred["dynamo"] is False and deferred["sympy"] is False
    assert loaded["dynamo"] is True
    assert deferred["weights"] == loaded["weights"]  # bit-exact: the same optimizer math
    assert deferred["loss"] == loaded["loss"]


def test_after_an_eager_fit_torch_compiles_the_optimizer_as_usual(tmp_path):
    out = _run(
        tmp_path,
        """
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, default_root_dir="runs")
    assert "torch._dynamo" not in sys.modules
    fn = torch.optim.Optimizer.add_param_group.__wrapped__
    assert "__dynamo_disable" not in fn.__dict__  # the stand-in's no-op mark is gone

    net = model.module if hasattr(model, "module") else model
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)  # the real torch._dynamo from here on
    import torch._dynamo
    assert torch._dynamo.disable is not None and hasattr(torch._dynamo, "optimize")
    assert fn.__dict__["__dynamo_disable"] is not fn  # the real "never compile" wrapper

    @torch.compile(backend="eager")
    def double(t):
        return t * 2

    ok = bool((double(torch.ones(3)) == 2).all())
    loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    opt.step()
    print(json.dumps({"ok": ok}))
    """,
    )
    assert out["ok"]


def test_something_compiling_inside_a_fit_gets_the_real_dynamo(tmp_path):
    """A callback that imports a torch._dynamo submodule and compiles, mid-fit: the real module
    replaces the stand-in at once, with no module imported twice, and the fit goes on."""
    out = _run(
        tmp_path,
        """
    seen = {}

    class Compiles(ember.Callback):
        def on_train_epoch_start(self, trainer, model):  # probes that must not load it
            if trainer.current_epoch == 0:
                import importlib.util
                seen["spec"] = importlib.util.find_spec("torch._dynamo") is not None
                # type(): any attribute lookup other than the two no-ops loads the real module
                seen["deferred"] = type(sys.modules["torch._dynamo"]).__name__ == "_StandIn"

        def on_epoch_end(self, trainer, model, logs):
            import torch._dynamo.config as config
            seen["same_config"] = config is sys.modules["torch._dynamo.config"]
            seen["real"] = hasattr(torch._dynamo, "optimize")
            seen["compiled"] = float(torch.compile(lambda t: t + 1, backend="eager")(
                torch.zeros(1)))

    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, default_root_dir="runs",
                        callbacks=[Compiles()])
    import torch._dynamo.config
    seen["one_module"] = sys.modules["torch._dynamo"] is torch._dynamo
    seen["config_once"] = torch._dynamo.config is sys.modules["torch._dynamo.config"]
    seen["epochs"] = len(history.history["loss"])
    print(json.dumps(seen))
    """,
    )
    assert out == {
        "same_config": True,
        "real": True,
        "compiled": 1.0,
        "one_module": True,
        "config_once": True,
        "epochs": 2,
        "spec": True,
        "deferred": True,
    }


def test_a_compiled_fit_uses_the_real_dynamo(tmp_path):
    out = _run(
        tmp_path,
        """
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, default_root_dir="runs", compile=True)
    print(json.dumps({"dynamo": hasattr(sys.modules["torch._dynamo"], "optimize")}))
    """,
    )
    assert out["dynamo"]
