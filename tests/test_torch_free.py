"""The CPU worker never imports torch: serving (app.pipeline included), /model, the health check
and the settings.

Each check runs in a fresh interpreter, since this test process has torch loaded by others.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.runtime.device import nvidia_gpu_present
from app.settings import cgroup_cpu_quota
from tests.conftest import REPO_ROOT

HEAVY = ("torch", "torchinfo", "onnx", "matplotlib", "tqdm")


def modules_loaded_after(code: str) -> list[str]:
    """Run ``code`` in a fresh python in the repo root; return the heavy packages it loaded."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    return sorted({name.split(".")[0] for name in loaded} & set(HEAVY))


def test_a_cpu_worker_serves_reads_a_digit_and_reports_the_model_without_torch():
    code = """
from pathlib import Path
from fastapi.testclient import TestClient
import app.pipeline.answer, app.pipeline.batcher, app.pipeline.uploads  # every step of the pipeline
from app.main import create_app
from app.settings import Settings

with TestClient(create_app(Settings(device="auto", cpu_threads=1))) as client:
    assert client.get("/ready").status_code == 200
    assert client.get("/model").json()["total_params"] == 19_570
    assert "Conv2d-32" in client.get("/model?format=text").text
    image = Path("docs/seven.png").read_bytes()
    answer = client.post("/predict", files=[("file", ("seven.png", image, "image/png"))]).json()
    assert answer["predictions"][0]["digit"] == 7, answer
    assert answer["device"] == "cpu"
    number = Path("docs/number.png").read_bytes()
    read = client.post("/read", files=[("file", ("number.png", number, "image/png"))]).json()
    assert read["numbers"][0]["text"] == "7210", read
"""
    assert modules_loaded_after(code) == []


def test_the_health_check_and_the_settings_import_no_torch():
    code = """
import runpy
runpy.run_path("docker/healthcheck.py", run_name="healthcheck")
from app.settings import get_settings
get_settings()
"""
    assert modules_loaded_after(code) == []


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2, docker run --cpus 1.5
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.0),
        ({"cpu,cpuacct/cpu.cfs_quota_us": "50000", "cpu,cpuacct/cpu.cfs_period_us": "100000"}, 0.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1, none
        ({}, None),  # no cgroup files at all
    ],
)
def test_the_cpu_quota_is_read_from_cgroup_v1_and_v2(tmp_path: Path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_quota(tmp_path) == quota


def test_a_gpu_is_looked_for_by_its_device_node_without_torch(tmp_path: Path):
    assert not nvidia_gpu_present(tmp_path)
    (tmp_path / "nvidiactl").touch()  # the driver's control node alone is no GPU
    assert not nvidia_gpu_present(tmp_path)
    (tmp_path / "nvidia0").touch()
    assert nvidia_gpu_present(tmp_path)
