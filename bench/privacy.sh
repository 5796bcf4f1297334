#!/usr/bin/env bash
# bench/privacy.sh — what the cloak protects and what it does not, measured on
# SmolLM2-135M-Instruct over bench/text/english.txt (bench/privacy.c says how).
#
#   bench/privacy.sh            writes bench/results/privacy.json, prints the tables
#
# Builds into build-privacy (release), fetches the model into the cache on
# first use (deploy/deps.sh), runs under a minute on 2 cores. The noise is
# seeded, but every prep draws a fresh secret Q, so what hangs on float
# rounding under Q moves from run to run: the Procrustes errors of table (c)
# in their second digit, the last digits of the perplexities, and norm
# matching at sigma 0 by a position or two (tokens whose norms differ by
# less than that rounding).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${INFEMERAL_CACHE:-$HOME/.cache/infemeral}"
MODEL="$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -s "$MODEL" ] || MODEL=$(./deploy/deps.sh | tail -n 1)
BUILD=build-privacy
[ -d "$BUILD" ] || meson setup "$BUILD" --buildtype=release -Dtests=false >/dev/null
ninja -C "$BUILD" bench/privacy >/dev/null
mkdir -p bench/results
"./$BUILD/bench/privacy" --model "$MODEL" --text bench/text/english.txt --positions 256 \
  --json bench/results/privacy.json
