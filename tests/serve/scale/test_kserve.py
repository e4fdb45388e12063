"""The KServe manifests and the Containerfile: valid against the Kubernetes and KServe schemas,
and what they run (command line, ports, probes) is what ``ember serve`` really answers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.plugins.waiting import free_port, wait_until

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "kserve").glob("*.yaml"))
KSERVE_SCHEMA = DEPLOY / "kserve" / "schemas" / "kserve.schema.json"
K8S_VERSION = "v1.37.0-local-strict"


@pytest.fixture(scope="module")
def validate():
    """validate(document) -> list of error messages (KServe CRDs, Kubernetes types inside)."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    k8s_dir = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / K8S_VERSION
    k8s = json.loads((k8s_dir / "_definitions.json").read_text())
    kserve = json.loads(KSERVE_SCHEMA.read_text())
    registry = Registry().with_resources([
        ("https://kubernetes.io/api/_definitions.json", DRAFT202012.create_resource(k8s)),
        (kserve["$id"], Resource.from_contents(kserve)),
    ])  # fmt: skip

    def check(document: dict) -> list[str]:
        target = kserve["kinds"].get(document.get("kind"))
        assert target is not None, f"no schema for kind {document.get('kind')!r}"
        schema = {"$ref": kserve["$id"] + target}
        validator = jsonschema.Draft202012Validator(schema, registry=registry)
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in validator.iter_errors(document)]  # fmt: skip

    return check


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _runtime() -> dict:
    return _load(DEPLOY / "kserve" / "clusterservingruntime.yaml")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_are_valid_kserve_resources(path, validate):
    assert validate(_load(path)) == []


def test_the_schemas_bite(validate):
    runtime = _runtime()
    typo = json.loads(json.dumps(runtime))
    typo["spec"]["supportedModelFormat"] = typo["spec"].pop("supportedModelFormats")
    assert any("supportedModelFormat" in e for e in validate(typo))
    bad_probe = json.loads(json.dumps(runtime))
    bad_probe["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/x"
    assert any("paht" in e for e in validate(bad_probe))  # a Kubernetes type, strict
    no_containers = json.loads(json.dumps(runtime))
    del no_containers["spec"]["containers"]
    assert any("containers" in e for e in validate(no_containers))
    isvc = _load(DEPLOY / "kserve" / "inferenceservice.yaml")
    isvc["spec"]["predictor"]["minReplicas"] = "one"
    assert any("minReplicas" in e for e in validate(isvc))


def test_runtime_speaks_v2_on_8080_and_8081_with_the_kserve_probes():
    spec = _runtime()["spec"]
    container = spec["containers"][0]
    assert {"v2", "grpc-v2"} <= set(spec["protocolVersions"])
    assert [f["name"] for f in spec["supportedModelFormats"] if f.get("autoSelect")] == ["ember"]
    args = container["args"]
    assert (
        args[args.index("--port") + 1] == "8080" and args[args.index("--grpc-port") + 1] == "8081"
    )
    assert container["ports"][0]["containerPort"] == 8080
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    grpc = _load(DEPLOY / "kserve" / "servingruntime-grpc.yaml")["spec"]["containers"][0]
    assert grpc["ports"] == [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]
    assert grpc["args"] == args
    assert container["securityContext"]["runAsNonRoot"] is True


def test_inference_service_has_storage_replicas_and_a_canary():
    predictor = _load(DEPLOY / "kserve" / "inferenceservice.yaml")["spec"]["predictor"]
    assert predictor["model"]["storageUri"].startswith("s3://")
    assert predictor["model"]["runtime"] == _runtime()["metadata"]["name"]
    assert 1 <= predictor["minReplicas"] < predictor["maxReplicas"]
    assert 0 < predictor["canaryTrafficPercent"] < 100


def _containerfile() -> dict[str, list[str]]:
    instructions: dict[str, list[str]] = {}
    text = (DEPLOY / "Containerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            word, _, rest = line.strip().partition(" ")
            instructions.setdefault(word.upper(), []).append(rest.strip())
    return instructions


def test_container_runs_the_runtime_command_line_as_a_non_root_user():
    steps = _containerfile()
    user = steps["USER"][-1]
    assert user not in ("root", "0") and not user.startswith("0:")
    entrypoint, cmd = json.loads(steps["ENTRYPOINT"][-1]), json.loads(steps["CMD"][-1])
    container = _runtime()["spec"]["containers"][0]
    assert entrypoint == container["command"] and cmd == container["args"]
    assert set(steps["EXPOSE"][-1].split()) == {"8080", "8081"}
    assert any("[serve]" in step for step in steps["RUN"])
    # `ember` is the console script of ember.cli:main
    assert re.search(r'^ember = "ember.cli:main"$', (ROOT / "pyproject.toml").read_text(), re.M)


@pytest.mark.e2e
def test_the_runtime_command_line_answers_its_probes(template_repo, tmp_path):
    container = _runtime()["spec"]["containers"][0]
    rest, grpc = free_port(), free_port()
    models = shutil.copytree(template_repo, tmp_path / "models")
    mapping = {
        "/mnt/models": str(models),
        "8080": str(rest),
        "8081": str(grpc),
        "0.0.0.0": "127.0.0.1",
    }
    args = [mapping.get(a, a) for a in container["args"]]
    assert container["command"] == ["ember", "serve"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "ember.cli", "serve", *args], env=env)
    try:
        probes = {k: container[k]["httpGet"] for k in ("livenessProbe", "readinessProbe")}
        answers: dict[str, int] = {}

        def probed() -> bool:
            for name, probe in probes.items():
                port = {8080: rest, 8081: grpc}[probe["port"]]
                try:
                    answers[name] = httpx.get(f"http://127.0.0.1:{port}{probe['path']}").status_code
                except httpx.HTTPError:
                    answers[name] = 0
            return set(answers.values()) == {200}

        wait_until(probed, 90, lambda: str(answers), interval=0.2)
        assert answers == {"livenessProbe": 200, "readinessProbe": 200}
        tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
        with tritonclient_grpc.InferenceServerClient(f"127.0.0.1:{grpc}") as client:
            assert client.is_server_ready()
        assert not (tmp_path / ".ember" / "serve-token").exists()  # --no-management
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
