"""Writes kserve.schema.json: JSON schemas of KServe's InferenceService, ServingRuntime and
ClusterServingRuntime, derived from the ``kserve`` Python SDK wheel on PyPI (Apache-2.0).

The SDK's model classes are generated from KServe's OpenAPI definitions (the ones its CRDs are
generated from): each class lists its fields (``openapi_types``, ``attribute_map``) and refuses
a missing required field (``must not be `None```). This script reads them with ``ast`` (nothing
from the wheel is imported or run) and writes one schema with a ``$defs`` entry per class;
Kubernetes types (``V1Container``, ``V1ObjectMeta``, ...) are ``$ref``s into the
``_definitions.json`` that the ``kubernetes-validate`` package ships, resolved at test time.
KServe objects are strict (``additionalProperties: false``), as ``kubectl apply`` is by default.

Run once, when KServe's API changes (the output is committed; tests download nothing):
    pip download kserve==0.21.0 --no-deps -d /tmp/kserve
    python deploy/kserve/schemas/generate.py /tmp/kserve/kserve-0.21.0-py3-none-any.whl
"""

from __future__ import annotations

import ast
import json
import re
import sys
import zipfile
from pathlib import Path

K8S = "https://kubernetes.io/api/_definitions.json#/$defs/"
K8S_PACKAGES = ("io.k8s.api.core.v1.", "io.k8s.apimachinery.pkg.apis.meta.v1.", "io.k8s.api.apps.v1.")
TOP = {
    "InferenceService": ("V1beta1InferenceService", "serving.kserve.io/v1beta1"),
    "ServingRuntime": ("V1alpha1ServingRuntime", "serving.kserve.io/v1alpha1"),
    "ClusterServingRuntime": ("V1alpha1ClusterServingRuntime", "serving.kserve.io/v1alpha1"),
}
SCALARS = {"str": {"type": "string"}, "int": {"type": "integer"}, "bool": {"type": "boolean"},
           "float": {"type": "number"}, "object": {}, "datetime": {"type": "string"},
           "ResourceQuantity": {"$ref": K8S + "io.k8s.apimachinery.pkg.api.resource.Quantity"}}


def read_classes(wheel: Path) -> dict[str, dict]:
    classes = {}
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if not re.match(r"kserve/models/[a-z0-9_]+\.py$", name) or name.endswith("__init__.py"):
                continue
            source = z.read(name).decode()
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.ClassDef):
                    fields = _class_dicts(node)
                    if fields is not None:
                        required = set(re.findall(r"Invalid value for `(\w+)`, must not be `None`", source))
                        classes[node.name] = {**fields, "required": required}
    return classes


def _class_dicts(node: ast.ClassDef) -> dict | None:
    found = {}
    for stmt in node.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target = getattr(stmt.targets[0], "id", None)
            if target in ("openapi_types", "attribute_map"):
                found[target] = ast.literal_eval(stmt.value)
    return found if len(found) == 2 else None


def type_schema(text: str, classes: dict, k8s: set[str]) -> dict:
    if text in SCALARS:
        return SCALARS[text]
    if m := re.fullmatch(r"list\[(.+)\]", text):
        return {"type": "array", "items": type_schema(m.group(1), classes, k8s)}
    if m := re.fullmatch(r"dict\(str, (.+)\)", text):
        return {"type": "object", "additionalProperties": type_schema(m.group(1), classes, k8s)}
    if text in classes:
        return {"$ref": f"#/$defs/{text}"}
    if m := re.fullmatch(r"V1(\w+)", text):
        for package in K8S_PACKAGES:
            if package + m.group(1) in k8s:
                return {"$ref": K8S + package + m.group(1)}
    print(f"unresolved type {text!r}: any value accepted", file=sys.stderr)
    return {}


def class_schema(name: str, info: dict, classes: dict, k8s: set[str]) -> dict:
    props = {info["attribute_map"][f]: type_schema(t, classes, k8s)
             for f, t in info["openapi_types"].items()}
    schema = {"type": "object", "properties": props, "additionalProperties": False}
    required = sorted(info["attribute_map"][f] for f in info["required"] if f in info["attribute_map"])
    if required:
        schema["required"] = required
    return schema


def main(wheel: str) -> None:
    import kubernetes_validate

    defs_file = (Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
                 / "v1.37.0-local-strict" / "_definitions.json")
    k8s = set(json.loads(defs_file.read_text())["$defs"])
    classes = read_classes(Path(wheel))
    defs = {n: class_schema(n, info, classes, k8s) for n, info in sorted(classes.items())}
    for kind, (cls, api_version) in TOP.items():
        defs[cls]["properties"]["kind"] = {"const": kind}
        defs[cls]["properties"]["apiVersion"] = {"const": api_version}
        defs[cls]["required"] = sorted({"apiVersion", "kind", "metadata", "spec"})
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://ember.local/kserve.schema.json",
        "description": f"Generated by generate.py from {Path(wheel).name} (Apache-2.0).",
        "kinds": {kind: f"#/$defs/{cls}" for kind, (cls, _) in TOP.items()},
        "$defs": defs,
    }
    out = Path(__file__).with_name("kserve.schema.json")
    out.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out} ({len(defs)} definitions)")


if __name__ == "__main__":
    main(sys.argv[1])
