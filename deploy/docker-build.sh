#!/usr/bin/env bash
# deploy/docker-build.sh — the build stage of the Dockerfile: installs the
# packages deploy/deps.sh lists (the same list CI builds with), builds the
# worker with meson (no tests), and installs the binary into $1 (default
# /out). Runs as root inside the build image (Debian 12 or Ubuntu 22.04,
# e.g. nvidia/cuda:12.x-devel-ubuntu22.04).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/out}

# One package list: read PKGS=(...) out of deps.sh (deps.sh itself also
# downloads the test model, which an image does not need).
eval "$(sed -n '/^PKGS=(/,/)/p' deploy/deps.sh)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${PKGS[@]}" binutils
# Ubuntu 22.04 ships meson 0.61; the project needs meson >= 1.0.
if ! meson --version | awk -F. '{ exit !($1 >= 1) }'; then
  python3 -m pip install --no-cache-dir 'meson>=1.0,<2'
  hash -r
fi
meson setup /tmp/build --buildtype=release -Dtests=false
ninja -C /tmp/build worker/infemeral-worker
mkdir -p "$OUT"
install -m 0755 /tmp/build/worker/infemeral-worker "$OUT/infemeral-worker"
strip "$OUT/infemeral-worker"
"$OUT/infemeral-worker" --help >/dev/null
