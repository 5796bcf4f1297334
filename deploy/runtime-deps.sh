#!/usr/bin/env bash
# deploy/runtime-deps.sh — the runtime stage of the Dockerfile: the shared
# libraries infemeral-worker links against (package names are the same on
# Debian 12 and Ubuntu 22.04), then a check that none is missing.
#   usage: runtime-deps.sh /usr/local/bin/infemeral-worker
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends ca-certificates libcurl4 libmicrohttpd12 \
  libcjson1 libgomp1 libssl3 libzstd1
rm -rf /var/lib/apt/lists/*
if ldd "$1" | grep -q 'not found'; then
  echo "runtime-deps: missing shared libraries:" >&2
  ldd "$1" | grep 'not found' >&2
  exit 1
fi
# A CUDA build loads cuBLAS with dlopen (common/cublas_dl.c), which ldd does
# not see: check the library the binary names is in the image.
want=$(grep -aoE 'libcublas\.so\.[0-9]+' "$1" | head -n 1 || true)
if [ -n "$want" ]; then
  if ! { ldconfig -p | grep -qF "$want" || ls /usr/local/cuda*/lib64/"$want" >/dev/null 2>&1; }; then
    echo "runtime-deps: $1 loads $want at run time, but this image has no $want (use a CUDA runtime base image)" >&2
    exit 1
  fi
fi
