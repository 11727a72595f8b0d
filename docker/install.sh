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
#
# Then what the service never reads leaves the venv (docs/decisions.md has the figures): pip and
# setuptools (nothing is installed into it after this; setuptools stays where a package requires
# it), the packages' test suites, C headers, Cython sources and type stubs, ONNX Runtime's C API
# library (the Python module has the runtime built in and never loads it), OpenCV's face
# detection cascades (cv2/data/*.xml: the service detects no faces), and the debug symbols
# of the packages' own extension modules (`strip`, from binutils). Bytecode stays: without it
# every worker would compile the web stack at each start (+0.8 s). The libraries auditwheel
# vendored (*.libs/) are left as built.
set -euo pipefail

venv_dir=${1:?usage: docker/install.sh VENV_DIR [PROJECT_DIR]}
project_dir=${2:-.}
requirement=$project_dir${EXTRAS:+[$EXTRAS]}

python3 -m venv "$venv_dir"
pip=("$venv_dir/bin/python" -m pip --disable-pip-version-check --no-input)
# A regular (not editable) install: the venv works without the source tree beside it.
"${pip[@]}" install "$requirement"

# setuptools stays where an installed package requires it (torch does: the CUDA image).
if "${pip[@]}" show setuptools 2>/dev/null | grep -qx 'Required-by: *'; then
    "${pip[@]}" uninstall -q -y setuptools
fi
"${pip[@]}" uninstall -q -y pip
site_packages=$("$venv_dir/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
find "$site_packages" -depth -type d -name tests -exec rm -rf {} +
find "$site_packages" -type f \( -name '*.h' -o -name '*.pyi' -o -name '*.pyx' -o -name '*.pxd' \) \
    -delete
rm -f "$site_packages"/onnxruntime/capi/libonnxruntime.so.*
rm -f "$site_packages"/cv2/data/*.xml
find "$site_packages" -type f \( -name '*.cpython-*.so' -o -name '*.abi3.so' \) \
    -not -path '*.libs/*' -exec strip --strip-unneeded {} +
