#!/usr/bin/env bash
# bench/cpu.sh — CPU prefill/decode speed on SmolLM2-135M-Instruct, next to
# llama.cpp on the same file, same machine, same run.
#
#   bench/cpu.sh [--no-ref]      writes bench/results/cpu.json
#
# The reference is llama.cpp through llama-cpp-python, installed (built from
# source, a few minutes on 2 cores) into $INFEMERAL_CACHE/refvenv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${INFEMERAL_CACHE:-$HOME/.cache/infemeral}"
MODEL=$(./deploy/deps.sh | tail -n 1)
[ -d build ] || meson setup build --buildtype=release >/dev/null
ninja -C build bench/bench_cpu >/dev/null
THREADS=$(nproc)
mkdir -p bench/results
OUT=bench/results/cpu.json

ours=$(mktemp)
OMP_NUM_THREADS=$THREADS ./build/bench/bench_cpu --model "$MODEL" --prefill 512 --decode 128 \
  --runs 3 --json "$ours" >&2

ref=""
if [ "${1:-}" != "--no-ref" ]; then
  if [ ! -x "$CACHE/refvenv/bin/python" ] || ! "$CACHE/refvenv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
    echo "bench: installing llama-cpp-python 0.3.16 into $CACHE/refvenv (builds llama.cpp)" >&2
    python3 -m venv "$CACHE/refvenv"
    "$CACHE/refvenv/bin/pip" install -q numpy llama-cpp-python==0.3.16 >&2
  fi
  ref=$("$CACHE/refvenv/bin/python" bench/llama_cpp_ref.py --model "$MODEL" --prefill 512 \
        --decode 128 --runs 3 --threads "$THREADS")
fi

python3 - "$ours" "$ref" "$OUT" <<'PY'
import json, platform, subprocess, sys
ours = json.load(open(sys.argv[1]))
ref = json.loads(sys.argv[2]) if sys.argv[2] else None
cpu = "unknown"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
rows = [ours] + ([ref] if ref else [])
print(f"CPU: {cpu}, {ours['threads']} threads, model {ours['model']}")
print("| implementation | prefill 512 tok/s | decode tok/s |")
print("|---|---|---|")
for r in rows:
    print(f"| {r['impl']} | {r['prefill_tok_s']:.1f} | {r['decode_tok_s']:.1f} |")
res = {"cpu": cpu, "results": rows}
if ref:
    res["ratio_prefill"] = round(ours["prefill_tok_s"] / ref["prefill_tok_s"], 3)
    res["ratio_decode"] = round(ours["decode_tok_s"] / ref["decode_tok_s"], 3)
    print(f"infemeral / llama.cpp: prefill {res['ratio_prefill']:.2f}x, decode {res['ratio_decode']:.2f}x")
json.dump(res, open(sys.argv[3], "w"), indent=1)
print(f"wrote {sys.argv[3]}")
PY
rm -f "$ours"
