"""The Docker image, checked without Docker (no engine in CI).

The install-and-start check reads the Dockerfile itself: it stages the build stage's COPYs,
runs the same install RUN into a fresh venv, lays out the runtime stage's WORKDIR, applies its
ENV and starts its CMD on loopback, then sends a real MNIST digit to /predict and runs the
HEALTHCHECK. Change the Dockerfile and this check follows it; nothing here restates its commands.
"""

import fnmatch
import gzip
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from app.artifacts.weights import save_weights
from app.model import S4Net
from app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "Dockerfile"
INSTALL_SCRIPT = "docker/install.sh"
STARTUP_TIMEOUT_S = 120
INSTALL_TIMEOUT_S = 900


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case, e.g. "RUN"
    arguments: str


def dockerfile_stages(path: Path = DOCKERFILE) -> list[list[Instruction]]:
    """The Dockerfile's instructions, one list per FROM (continuation lines joined)."""
    instructions, pending = [], ""
    for raw_line in path.read_text().splitlines():
        line = raw_line.strip()
        if line.startswith("#") or (not line and not pending):
            continue  # Docker drops comment lines, even inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    stages: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def without_flags(arguments: str) -> list[str]:
    """Shell words of an instruction, less its --flags (--mount=..., --from=... stay out)."""
    return [word for word in shlex.split(arguments) if not word.startswith("--")]


def only(stage: list[Instruction], keyword: str) -> str:
    matches = [i.arguments for i in stage if i.keyword == keyword]
    assert len(matches) == 1, f"expected one {keyword} in the stage, found {len(matches)}"
    return matches[0]


def build_stage_and_runtime_stage() -> tuple[list[Instruction], list[Instruction]]:
    stages = dockerfile_stages()
    build = [
        s for s in stages if any(INSTALL_SCRIPT in i.arguments for i in s if i.keyword == "RUN")
    ]
    assert len(build) == 1, f"exactly one stage must RUN {INSTALL_SCRIPT}"
    return build[0], stages[-1]


def dockerignored(relative_path: str) -> bool:
    """Whether .dockerignore keeps a path out of the build context (last matching rule wins).

    fnmatch stands in for Docker's Go matcher; they agree on the simple patterns used there.
    """
    parts = Path(relative_path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]  # a path and its parents
    ignored = False
    for rule in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negated, pattern = rule.startswith("!"), rule.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatch(candidate, pattern) for candidate in candidates):
            ignored = not negated
    return ignored


def copy_into(stage: list[Instruction], workdir: Path, context_roots: list[Path]) -> None:
    """Do the stage's COPYs from the build context (not --from ones) into ``workdir``.

    A source comes from the first root that has it, and only the files that .dockerignore lets
    into the context are copied, as Docker would.
    """
    for instruction in stage:
        if instruction.keyword != "COPY" or "--from=" in instruction.arguments:
            continue
        *sources, destination = without_flags(instruction.arguments)
        assert not destination.startswith("/"), "COPY destinations are relative to WORKDIR"
        chmod = re.search(r"--chmod=([0-7]+)", instruction.arguments)
        for source in sources:
            root = next((r for r in context_roots if (r / source).exists()), None)
            assert root is not None, f"COPY {source}: no such file in the build context"
            source_path = root / source
            if source_path.is_dir():
                files = {
                    f: workdir / destination / f.relative_to(source_path)
                    for f in source_path.rglob("*")
                    if f.is_file()
                }
            elif destination.endswith("/"):
                files = {source_path: workdir / destination / source_path.name}
            else:
                files = {source_path: workdir / destination}
            copied = 0
            for file, target in files.items():
                if not dockerignored(str(file.relative_to(root))):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, target)
                    if chmod:
                        target.chmod(int(chmod.group(1), 8))
                    copied += 1
            assert copied, f"COPY {source}: .dockerignore keeps all of it out of the context"


def build_arg_default(stage: list[Instruction], name: str) -> str:
    for instruction in stage:
        key, _, default = instruction.arguments.partition("=")
        if instruction.keyword == "ARG" and key == name:
            return default
    raise AssertionError(f"no ARG {name} in the stage")


def environment(stage: list[Instruction]) -> dict[str, str]:
    """The stage's ENV as KEY=VALUE pairs; $PATH is left for the caller to expand."""
    pairs = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for word in shlex.split(instruction.arguments):
                key, separator, value = word.partition("=")
                assert separator, f"use ENV KEY=VALUE, not the legacy form: {word}"
                pairs[key] = value
    return pairs


def exec_form(arguments: str) -> list[str]:
    command = json.loads(arguments)
    assert isinstance(command, list), "use the exec (JSON) form, so signals reach the process"
    return command


def data_files(package_dir: Path) -> set[Path]:
    """Non-Python files of a package, relative to it."""
    return {
        path.relative_to(package_dir)
        for path in package_dir.rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    }


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def first_mnist_test_digit(mnist_dir: Path) -> tuple[bytes, int]:
    """The first MNIST test image as PNG bytes, and its label (IDX: 16- and 8-byte headers)."""
    pixels = gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())[16 : 16 + 784]
    label = gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())[8]
    png = io.BytesIO()
    Image.frombytes("L", (28, 28), pixels).save(png, format="PNG")
    return png.getvalue(), label


# --- Static properties of the image that hadolint does not check --------------------------------


def test_runtime_image_runs_as_a_non_root_user():
    user = only(dockerfile_stages()[-1], "USER")
    assert user.split(":")[0] not in {"root", "0"}


def test_runtime_image_listens_where_it_exposes_and_is_health_checked():
    runtime = dockerfile_stages()[-1]
    env = environment(runtime)
    port = int(env.get("S4_PORT", Settings.model_fields["port"].default))
    grpc_port = int(env.get("S4_GRPC_PORT", Settings.model_fields["grpc_port"].default))
    assert only(runtime, "EXPOSE").split() == [str(port), str(grpc_port)]
    assert env["S4_HOST"] == "0.0.0.0"
    assert "CMD" in only(runtime, "HEALTHCHECK")


def test_dockerignore_sends_the_package_and_weights_but_no_venv_data_or_caches():
    for kept_out in [
        ".venv/bin/python",
        "data/mnist/x.gz",
        "checkpoints/epoch-1.pt",
        ".git/HEAD",
        "app/__pycache__/main.cpython-311.pyc",
        "tests/conftest.py",
    ]:
        assert dockerignored(kept_out), kept_out
    sent_files = ["pyproject.toml", "app/main.py", "docker/install.sh", "weights/s4net.json"]
    for sent in [*sent_files, "weights/digit-check.safetensors", "weights/digit-check.json"]:
        assert not dockerignored(sent), sent


# Every setting is documented: docs/settings.md is generated from Settings (tests/test_docs.py).


def test_docs_apply_only_manifests_that_ci_validates():
    """`make image-lint` validates every deploy/k8s/**.yaml and deploy/kserve/*.yaml; the docs
    must apply those."""
    pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    docs = "\n".join(page.read_text() for page in pages)
    applied = re.findall(r"kubectl apply(?: -f \S+)+", docs)
    assert applied, "neither README.md nor docs/ has a `kubectl apply -f` command"
    for command in applied:
        for path in command.split(" -f ")[1:]:
            validated = path.startswith(("deploy/k8s/", "deploy/kserve/"))
            assert validated and (REPO_ROOT / path).exists(), path


# --- The install-and-start path -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("S4_TEST_IMAGE_INSTALL") != "1",
    reason="fresh-venv install (a minute or more); `make image-check` runs it",
)
def test_image_install_and_start_path_serves_a_real_prediction(tmp_path: Path, mnist_dir: Path):
    build, runtime = build_stage_and_runtime_stage()

    # Until trained weights are committed, serve random-init ones: every step still runs, only
    # the digit itself cannot be checked.
    trained = (REPO_ROOT / "weights" / "s4net.safetensors").exists()
    stand_in = tmp_path / "stand-in"
    if not trained:
        save_weights(S4Net(), stand_in / "weights" / "s4net.safetensors", {"note": "untrained"})
    context_roots = [REPO_ROOT, stand_in]

    # Build stage: its COPYs into a bare directory, then its install RUN into a fresh venv.
    source_dir = tmp_path / "src"
    copy_into(build, source_dir, context_roots)
    install_run = next(i for i in build if i.keyword == "RUN" and INSTALL_SCRIPT in i.arguments)
    script, image_venv = without_flags(install_run.arguments)
    venv_copies = [i for i in runtime if i.keyword == "COPY" and "--from=" in i.arguments]
    assert [without_flags(i.arguments) for i in venv_copies] == [[image_venv, image_venv]]
    venv = tmp_path / "venv"
    # The Dockerfile's extras (none: the CPU image) unless EXTRAS is set.
    extras = os.environ.get("EXTRAS", build_arg_default(build, "EXTRAS"))
    installed = subprocess.run(
        [f"./{script}", str(venv)],
        cwd=source_dir,
        env={**os.environ, "EXTRAS": extras},
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    # A regular install carries only the package data pyproject.toml declares; the image has
    # no source tree to fall back on, so every non-Python file of app/ must have been installed.
    installed_app = Path(
        subprocess.check_output(
            [venv / "bin" / "python", "-c", "import app; print(app.__path__[0])"], text=True
        ).strip()
    )
    assert data_files(installed_app) == data_files(REPO_ROOT / "app")

    # Runtime stage: its WORKDIR with its COPYs, its ENV (the venv put where the image has it),
    # and a clean slate of S4_ settings, as in a fresh container.
    workdir = tmp_path / "workdir"
    copy_into(runtime, workdir, context_roots)
    port = free_loopback_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("S4_") and k != "PYTHONPATH"}
    for key, value in environment(runtime).items():
        env[key] = value.replace("$PATH", os.environ["PATH"]).replace(image_venv, str(venv))
    env.update(S4_HOST="127.0.0.1", S4_PORT=str(port))
    command = exec_form(only(runtime, "CMD"))
    assert str(shutil.which(command[0], path=env["PATH"])).startswith(str(venv))

    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=log)
    try:
        base_url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base_url, timeout=10) as client:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while True:
                assert server.poll() is None, f"the CMD exited:\n{log_path.read_text()}"
                assert time.monotonic() < deadline, f"not ready:\n{log_path.read_text()}"
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)

            png, label = first_mnist_test_digit(mnist_dir)
            response = client.post("/predict", files={"file": ("digit.png", png, "image/png")})
            assert response.status_code == 200, response.text
            digit = response.json()["predictions"][0]["digit"]
            assert digit == label if trained else digit in range(10)

        healthcheck = exec_form(only(runtime, "HEALTHCHECK").split("CMD", 1)[1])
        checked = subprocess.run(healthcheck, cwd=workdir, env=env, capture_output=True, timeout=30)
        assert checked.returncode == 0, checked.stderr

        # docker stop: SIGTERM, then the process must finish shutting down on its own.
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=Settings.model_fields["graceful_shutdown_s"].default + 10)
        assert "Finished server process" in log_path.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
