#!/usr/bin/env bash
# Make a Debian bookworm base image with its Python 3.11 (python3, venv, pip) by debootstrap,
# since no image registry is reachable in CI, and print its tarball's path.
#
#   .ci/docker-base.sh [CACHE_DIR]
#
# The tarball is cached in CACHE_DIR (default /var/cache/s4digits-ci, outside the clone) and
# reused while it exists; a fresh machine makes it (a minute or two; needs root and a Debian
# mirror, as apt does: debootstrap's default one, or DEBIAN_MIRROR where that is set). The base
# trusts what this host trusts: its extra CA certificates (/usr/local/share/ca-certificates) are
# added, and pip is told to use the system's CA bundle, so `pip install` in the build reaches
# PyPI as the host's pip does.
set -euo pipefail

cache_dir=${1:-/var/cache/s4digits-ci}
tarball="$cache_dir/bookworm-python3.11-v2.tar"

if [[ ! -s "$tarball" ]]; then
    mkdir -p "$cache_dir"
    root=$(mktemp -d "$cache_dir/rootfs.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$root" ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"} >&2
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null \
        && chroot "$root" update-ca-certificates >&2
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$root/etc/pip.conf"
    # What python:3.11-slim also leaves out: the apt lists and caches.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
    tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
fi
echo "$tarball"
