#!/usr/bin/env bash
# Install the s4digits package and its pinned dependencies into a new virtual environment.
#
#   docker/install.sh VENV_DIR [PROJECT_DIR]
#
# The one install path: the Dockerfile runs it, and `make image-check` runs it into a fresh venv,
# so the image and the check cannot drift apart. pyproject.toml is the only list of dependencies.
#
# TORCH_INDEX_URL: the package index torch comes from, e.g. PyTorch's CPU index for a CPU-only
# image. Empty: torch comes from the same index as everything else (on Linux, PyPI's torch is the
# CUDA build). The torch version is read from pyproject.toml, so it is pinned in one place.
set -euo pipefail

venv_dir=${1:?usage: docker/install.sh VENV_DIR [PROJECT_DIR]}
project_dir=${2:-.}

python3 -m venv "$venv_dir"
pip=("$venv_dir/bin/python" -m pip --disable-pip-version-check --no-input)

if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
    torch_requirement=$("$venv_dir/bin/python" - "$project_dir/pyproject.toml" <<'PY'
import sys
import tomllib

with open(sys.argv[1], "rb") as pyproject:
    dependencies = tomllib.load(pyproject)["project"]["dependencies"]
print(next(dep for dep in dependencies if dep.replace(" ", "").startswith("torch==")))
PY
)
    # torch first, from its own index; the install below then finds it already satisfied
    # (2.13.0+cpu satisfies torch==2.13.0) and takes the rest from the default index.
    "${pip[@]}" install --index-url "$TORCH_INDEX_URL" "$torch_requirement"
fi

# A regular (not editable) install: the venv works without the source tree beside it.
"${pip[@]}" install "$project_dir"
