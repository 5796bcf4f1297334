#!/usr/bin/env bash
# deploy/setup.sh — the newcomer's one command: install the dependencies,
# fetch SmolLM2-135M-Instruct, build, and ask the model a question locally.
#
#   ./deploy/setup.sh ["your question"]
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=$(./deploy/deps.sh | tail -n 1)
[ -d build ] || meson setup build --buildtype=release >/dev/null
ninja -C build >/dev/null

QUESTION="${1:-What is the capital of France?}"
echo "Q: $QUESTION" >&2
exec ./build/client/infemeral run --model "$MODEL" --chat --prompt "$QUESTION" \
     --temperature 0 --max-tokens 128
