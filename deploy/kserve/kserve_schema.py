"""KServe's resources checked offline, as `kubernetes-validate --strict` checks deploy/k8s/.

    pip download --no-deps kserve==0.21.0 -d /tmp/kserve
    python deploy/kserve/kserve_schema.py extract /tmp/kserve/kserve-0.21.0-py3-none-any.whl \
        > deploy/kserve/kserve-sdk-0.21.0.schema.json
    python deploy/kserve/kserve_schema.py validate deploy/kserve/*.yaml

No registry package ships KServe's CRDs, so the schema is extracted from what the `kserve` SDK
wheel from PyPI (`pip download --no-deps kserve==0.21.0`) defines: each generated model class in
kserve/models/ (V1beta1InferenceService, V1alpha1ServingRuntime, ...) gives its fields' JSON
names (attribute_map), types (openapi_types) and required fields (the setters that refuse None).
The extractor reads those files as text (ast), without importing the SDK. Kubernetes' own types
(V1Container, V1Probe, ...) are not copied: they point at the strict Kubernetes schemas that
kubernetes-validate ships, merged in at validation. Unknown fields are refused everywhere.
"""

import ast
import json
import re
import sys
import zipfile
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSION = "1.37.0"
SCALARS = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "object": {},
    "datetime": {"type": "string"},
}
ROOTS = {  # (apiVersion, kind) -> the SDK class that defines it
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
}


def kubernetes_definitions() -> dict:
    package = Path(kubernetes_validate.__file__).parent
    path = package / "kubernetes-json-schema" / f"v{K8S_VERSION}-local-strict" / "_definitions.json"
    return json.loads(path.read_text())["$defs"]


def kubernetes_name(sdk_name: str, definitions: dict) -> str:
    """The Kubernetes definition an SDK type name stands for: V1Container ->
    io.k8s.api.core.v1.Container, K8sIoApiAppsV1DeploymentStrategy -> ...apps.v1...."""
    full = re.fullmatch(r"K8sIoApi([A-Z][a-z]+)(V\d+(?:(?:alpha|beta)\d+)?)(\w+)", sdk_name)
    if full:
        group, version, kind = full.group(1).lower(), full.group(2).lower(), full.group(3)
        return f"io.k8s.api.{group}.{version}.{kind}"
    short = re.fullmatch(r"(V\d+(?:(?:alpha|beta)\d+)?)(\w+)", sdk_name)
    if short is None:
        raise ValueError(f"no Kubernetes type for {sdk_name}")
    suffix = f".{short.group(1).lower()}.{short.group(2)}"
    matches = sorted(name for name in definitions if name.endswith(suffix))
    for preferred in ("io.k8s.api.core.", "io.k8s.apimachinery."):
        for name in matches:
            if name.startswith(preferred):
                return name
    if not matches:
        raise ValueError(f"no Kubernetes type for {sdk_name}")
    return matches[0]


def sdk_classes(wheel: Path) -> dict[str, tuple[dict, dict, set]]:
    """Each model class of the wheel: (openapi_types, attribute_map, required attributes)."""
    classes = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if not re.fullmatch(r"kserve/models/\w+\.py", name) or name.endswith("__init__.py"):
                continue
            source = archive.read(name).decode()
            for node in ast.parse(source).body:
                if not isinstance(node, ast.ClassDef):
                    continue
                assigned = {
                    stmt.targets[0].id: ast.literal_eval(stmt.value)
                    for stmt in node.body
                    if isinstance(stmt, ast.Assign)
                    and isinstance(stmt.targets[0], ast.Name)
                    and stmt.targets[0].id in ("openapi_types", "attribute_map")
                }
                required = {
                    match.group(1)
                    for match in re.finditer(
                        r"def (\w+)\(self, \w+\):(?:(?!\n    def ).)*?must not be `None`",
                        ast.get_source_segment(source, node),
                        re.S,
                    )
                }
                classes[node.name] = (
                    assigned["openapi_types"],
                    assigned["attribute_map"],
                    required,
                )
    return classes


def type_schema(type_name: str, classes: dict, definitions: dict) -> dict:
    if type_name in SCALARS:
        return SCALARS[type_name]
    if type_name == "ResourceQuantity":
        return {"$ref": "#/$defs/io.k8s.apimachinery.pkg.api.resource.Quantity"}
    if match := re.fullmatch(r"list\[(.+)\]", type_name):
        return {"type": "array", "items": type_schema(match.group(1), classes, definitions)}
    if match := re.fullmatch(r"dict\(str, (.+)\)", type_name):
        values = type_schema(match.group(1), classes, definitions)
        return {"type": "object", "additionalProperties": values}
    if type_name in classes:
        return {"$ref": f"#/$defs/kserve.{type_name}"}
    try:
        return {"$ref": f"#/$defs/{kubernetes_name(type_name, definitions)}"}
    except ValueError:  # named by the SDK, defined nowhere in it: any value
        return {"$comment": f"{type_name}: not defined by the SDK, not checked"}


def extract(wheel: Path) -> dict:
    classes = sdk_classes(wheel)
    definitions = kubernetes_definitions()
    defs = {}
    wanted, seen = sorted(set(ROOTS.values())), set()
    while wanted:  # only the classes the roots reach
        name = wanted.pop()
        if name in seen:
            continue
        seen.add(name)
        types, attributes, required = classes[name]
        for type_name in types.values():
            wanted += [found for found in re.findall(r"\w+", type_name) if found in classes]
        defs[f"kserve.{name}"] = {
            "type": "object",
            "properties": {
                attributes[attr]: type_schema(type_name, classes, definitions)
                for attr, type_name in types.items()
            },
            "required": sorted(attributes[attr] for attr in required),
            "additionalProperties": False,
        }
    return {
        "$comment": f"Extracted by deploy/kserve/kserve_schema.py from {wheel.name} (PyPI): the "
        "SDK's generated model classes; Kubernetes types refer to kubernetes-validate's strict "
        f"schemas for Kubernetes {K8S_VERSION}.",
        "$defs": defs,
    }


def validate(schema_path: Path, manifests: list[Path]) -> list[str]:
    """Every problem of every document, as `file: kind/name: path: message` lines."""
    schema = json.loads(schema_path.read_text())
    defs = {**kubernetes_definitions(), **schema["$defs"]}
    problems = []
    for manifest in manifests:
        for document in yaml.safe_load_all(manifest.read_text()):
            if document is None:
                continue
            key = (document.get("apiVersion"), document.get("kind"))
            name = f"{key[1]}/{document.get('metadata', {}).get('name')}"
            if key not in ROOTS:
                problems.append(f"{manifest}: {name}: not a KServe resource this schema knows")
                continue
            root = {"$defs": defs, "$ref": f"#/$defs/kserve.{ROOTS[key]}"}
            validator = jsonschema.Draft202012Validator(root)
            for error in validator.iter_errors(document):
                location = "/".join(map(str, error.absolute_path)) or "(top)"
                problems.append(f"{manifest}: {name}: {location}: {error.message}")
    return problems


def main(argv: list[str]) -> int:
    command, *paths = argv
    here = Path(__file__).parent
    if command == "extract":
        print(json.dumps(extract(Path(paths[0])), indent=1, sort_keys=True))
        return 0
    schema = next(here.glob("kserve-sdk-*.schema.json"))
    problems = validate(schema, [Path(path) for path in paths])
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{len(paths)} KServe manifest(s) valid against {schema.name}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
