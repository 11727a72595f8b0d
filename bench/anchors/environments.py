"""Each anchor's own virtual environment, made once under .cache/anchors/ (ignored by git).

An environment holds the anchor's pinned packages, torch==2.13.0 and the packages
bench/anchors/reading.py imports, at the versions pyproject.toml pins for the service; its
folder is named after a hash of all of these, so a change of pins makes a new one. Ours runs in
the interpreter running the bench (this checkout's .venv).
"""

import hashlib
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from bench.anchors.contenders import REPO_ROOT, Contender

CACHE = REPO_ROOT / ".cache" / "anchors"
TORCH = "torch==2.13.0"  # never unpinned: that would pull a multi-GB CUDA build
# What the anchors' handlers import from this repository needs (app.pipeline, app.model,
# app.artifacts.weights); taken at pyproject.toml's pins where it pins them, unless the anchor
# pins one itself (an anchor that cannot run with the service's numpy).
READING_PACKAGES = ("numpy", "pillow", "safetensors", "opencv-python-headless")
COMPLETE = ".complete"  # written last: an environment without it is half made and made anew


class EnvironmentFailed(RuntimeError):
    """An anchor's environment could not be made; the message ends with pip's own words."""


def service_pins(pyproject: Path = REPO_ROOT / "pyproject.toml") -> dict[str, str]:
    """The service's dependencies pinned with ==, by lower-case name -> 'name==version'."""
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    pins = {}
    for requirement in dependencies:
        if match := re.fullmatch(
            r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^;\s]+)", requirement.strip()
        ):
            pins[match[1].lower()] = f"{match[1]}=={match[3]}"
    return pins


def requirements(contender: Contender) -> list[str]:
    """Everything an anchor's environment is made from, pinned."""
    pins = service_pins()
    own = {re.split(r"[=<>!~\[]", package, maxsplit=1)[0].lower() for package in contender.packages}
    reading = [pins[name] for name in READING_PACKAGES if name in pins and name not in own]
    return [*contender.packages, TORCH, *reading]


def environment_python(contender: Contender, log: bool = True) -> Path:
    """The python of the contender's environment, made first if need be (minutes, once)."""
    if not contender.packages:
        return Path(sys.executable)
    wanted = requirements(contender)
    key = hashlib.sha256("\n".join([sys.version, *wanted]).encode()).hexdigest()[:12]
    folder = CACHE / f"{contender.slug}-{key}"
    python = folder / "bin" / "python"
    if (folder / COMPLETE).exists():
        return python
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if log:
        print(f"making {contender.name}'s environment in {folder.relative_to(REPO_ROOT)} ...",
              flush=True)  # fmt: skip
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *wanted],
        capture_output=True,
        text=True,
    )
    if install.returncode != 0:
        raise EnvironmentFailed(f"pip install {' '.join(wanted)} failed:\n{install.stderr[-2000:]}")
    (folder / COMPLETE).write_text("\n".join(wanted) + "\n")
    return python
