"""deploy/kserve/: the manifest passes the kserve SDK's schema, which refuses what is wrong, and
its ports and probes are the service's own."""

import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
KSERVE_DIR = REPO_ROOT / "deploy" / "kserve"
MANIFEST = KSERVE_DIR / "inferenceservice.yaml"
sys.path.insert(0, str(KSERVE_DIR))

import kserve_schema  # noqa: E402

SCHEMA = next(KSERVE_DIR.glob("kserve-sdk-*.schema.json"))


def test_the_manifest_is_valid():
    assert kserve_schema.validate(SCHEMA, [MANIFEST]) == []


def test_unknown_fields_and_wrong_types_are_refused(tmp_path):
    broken = tmp_path / "broken.yaml"
    text = MANIFEST.read_text().replace("scaleTarget: 32", 'scaleTarget: "32"', 1)
    text = text.replace("canaryTrafficPercent: 10", "canaryTrafficPercent: 10\n    canary: 5")
    broken.write_text(text.replace("containerPort: 8000", "containerPort: 8000\n          url: x"))
    problems = "\n".join(kserve_schema.validate(SCHEMA, [broken]))
    assert "'32' is not of type 'integer'" in problems
    assert "('canary' was unexpected)" in problems
    assert "('url' was unexpected)" in problems


def test_ports_and_probes_are_the_services(make_client, reading_weights):
    documents = {
        (doc["kind"], doc["metadata"]["name"]): doc["spec"]
        for doc in yaml.safe_load_all(MANIFEST.read_text())
    }
    http = documents["ServingRuntime", "s4digits"]["containers"][0]
    grpc = documents["ServingRuntime", "s4digits-grpc"]["containers"][0]
    assert [(p["name"], p["containerPort"]) for p in http["ports"]] == [("http1", 8000)]
    assert [(p["name"], p["containerPort"]) for p in grpc["ports"]] == [("h2c", 8001)]
    for name, protocol in (("s4digits", "v2"), ("s4digits-grpc", "grpc-v2")):
        model = documents["InferenceService", name]["predictor"]["model"]
        assert (model["runtime"], model["protocolVersion"]) == (name, protocol)
    with make_client(weights=reading_weights, cpu_threads=1) as client:
        for probe in ("livenessProbe", "readinessProbe"):
            assert client.get(http[probe]["httpGet"]["path"]).status_code == 200
