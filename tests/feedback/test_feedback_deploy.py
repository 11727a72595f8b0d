"""Where the image and the manifests keep the corrections: SQLite on a writable volume with one
replica, or PostgreSQL from a Secret with several; the root file system stays read-only."""

from pathlib import Path, PurePosixPath

import yaml
from sqlalchemy.engine import make_url

from app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "deploy" / "k8s"


def manifests(kind: str) -> list[dict]:
    documents = [yaml.safe_load(path.read_text()) for path in sorted(K8S.rglob("*.yaml"))]
    return [document for document in documents if document["kind"] == kind]


def sqlite_directory(url: str, workdir: str) -> PurePosixPath:
    return (PurePosixPath(workdir) / make_url(url).database).parent


def test_the_image_keeps_sqlite_on_a_volume_the_service_user_owns():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    runtime = dockerfile[dockerfile.index("AS runtime") :]
    workdir = runtime.split("WORKDIR ", 1)[1].split()[0]
    default = Settings.model_fields["database_url"].default
    directory = str(sqlite_directory(default, workdir))
    assert f'VOLUME ["{directory}"]' in runtime
    assert f"chown 10001:10001 {directory}" in runtime and "USER 10001:10001" in runtime


def test_each_deployment_says_where_its_database_lives_and_stays_read_only():
    scaled = {hpa["spec"]["scaleTargetRef"]["name"] for hpa in manifests("HorizontalPodAutoscaler")}
    claims = {claim["metadata"]["name"] for claim in manifests("PersistentVolumeClaim")}
    deployments = manifests("Deployment")
    assert len(deployments) == 3
    for deployment in deployments:
        name, spec = deployment["metadata"]["name"], deployment["spec"]
        [container] = spec["template"]["spec"]["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        env = {variable["name"]: variable for variable in container["env"]}
        database = env["S4_DATABASE_URL"]
        if "value" in database:  # SQLite: one replica, its directory a persistent volume
            assert database["value"].startswith("sqlite:///"), name
            assert spec["replicas"] == 1 and name not in scaled, name
            assert spec["strategy"]["type"] == "Recreate", name
            directory = str(sqlite_directory(database["value"], "/"))
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
            claim = volumes[mounts[directory]]["persistentVolumeClaim"]["claimName"]
            assert claim in claims, name
        else:  # PostgreSQL, shared by every replica, its URL (with a password) from a Secret
            assert database["valueFrom"]["secretKeyRef"] == {
                "name": "s4digits-database",
                "key": "url",
            }, name
    [secret] = manifests("Secret")
    assert secret["metadata"]["name"] == "s4digits-database"
    assert secret["stringData"]["url"].startswith("postgresql+psycopg://")
