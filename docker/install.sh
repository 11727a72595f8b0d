#!/usr/bin/env bash
# Install the s4digits package and its pinned dependencies into a new virtual environment.
#
#   docker/install.sh VENV_DIR [PROJECT_DIR]
#
# The one install path: the Dockerfile runs it, and `make image-check` runs it into a fresh venv,
# so the image and the check cannot drift apart. pyproject.toml is the only list of dependencies.
#
# EXTRAS: the package's extras to install with it. Empty (the CPU image): no torch, the CPU
# worker serves through ONNX Runtime. `gpu` (the CUDA image): torch from the default index, whose
# Linux build bundles the CUDA runtime. The versions are pinned in pyproject.toml only.
set -euo pipefail

venv_dir=${1:?usage: docker/install.sh VENV_DIR [PROJECT_DIR]}
project_dir=${2:-.}
requirement=$project_dir${EXTRAS:+[$EXTRAS]}

python3 -m venv "$venv_dir"
# A regular (not editable) install: the venv works without the source tree beside it.
"$venv_dir/bin/python" -m pip --disable-pip-version-check --no-input install "$requirement"
