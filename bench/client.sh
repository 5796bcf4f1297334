#!/usr/bin/env bash
# bench/client.sh — the client's own cost per generated token (embed, cloak,
# serialize, seal, open, uncloak, lm_head, sample: everything but the worker),
# on SmolLM2-135M and on Llama-3.1-8B shapes, with each optimization off and
# on, next to the seed plan's estimate. One command for the README table:
#
#   bench/client.sh [--runs N]      writes bench/results/client_speed.json
#
# What it does:
#   1. builds (release) into $BUILD (default build-client-rel);
#   2. SmolLM2: `infemeral prep` with the f16 lm_head and with --lm-head int8;
#      8B: bench/mkbundle --preset llama3-8b --client-only (random weights of
#      the right shapes, untied), then bench/client_int8 for the int8 copy;
#      both folded (prep's default), and an 8B int8 copy with --no-fold;
#   3. `infemeral bench --client-only` (an in-process worker behind the real
#      seal/open; SmolLM2 runs its real layers there, 8B echoes the states)
#      for lm_head f16/int8 x --vocab-subset off/on x 1/2 threads, and the
#      8B int8 head without the folded rotation (the client rotates);
#   4. checks that greedy text is identical with the subset on and off and
#      with 1 and 2 threads (SmolLM2 split run), and records it;
#   5. the kernels next to OpenBLAS (bench/client_kernels).
# Bundles are cached in $INFEMERAL_CACHE/client-bench (~4 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=3
[ "${1:-}" = "--runs" ] && RUNS=$2
CACHE="${INFEMERAL_CACHE:-$HOME/.cache/infemeral}"
BUILD="${BUILD:-build-client-rel}"
MODEL=$(./deploy/deps.sh | tail -n 1)
[ -d "$BUILD" ] || meson setup "$BUILD" --buildtype=release -Dsmollm2_path="$MODEL" >/dev/null
ninja -C "$BUILD" client/infemeral bench/mkbundle bench/client_int8 bench/client_kernels >/dev/null
INF=./$BUILD/client/infemeral
B="$CACHE/client-bench/v3"   # v3: client bundle format 3 (folded rotation)
rm -rf "$CACHE"/client-bench/{smollm2-f16,smollm2-int8,llama3-8b,llama3-8b-f16,llama3-8b-int8}  # older layouts
mkdir -p "$B" bench/results
[ -d "$B/smollm2-f16" ] || $INF prep --model "$MODEL" --out "$B/smollm2-f16" --quiet
[ -d "$B/smollm2-int8" ] || $INF prep --model "$MODEL" --out "$B/smollm2-int8" --lm-head int8 --quiet
for f in fold nofold; do
  flag=""; [ $f = nofold ] && flag=--no-fold
  [ -d "$B/llama3-8b-$f" ] || ./$BUILD/bench/mkbundle --preset llama3-8b --weights f16 --client-only $flag --out "$B/llama3-8b-$f" >&2
done
[ -d "$B/llama3-8b-f16" ] || ./$BUILD/bench/client_int8 --f16 --in "$B/llama3-8b-fold/client" --out "$B/llama3-8b-f16"
[ -d "$B/llama3-8b-int8" ] || ./$BUILD/bench/client_int8 --in "$B/llama3-8b-fold/client" --out "$B/llama3-8b-int8"
[ -d "$B/llama3-8b-int8-nofold" ] || ./$BUILD/bench/client_int8 --in "$B/llama3-8b-nofold/client" --out "$B/llama3-8b-int8-nofold"
rm -rf "$B/llama3-8b-fold" "$B/llama3-8b-nofold"  # the f16 sources: their copies above are what runs

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
./$BUILD/bench/client_kernels --vocab 1024 --dim 64 --reps 1 > "$TMP/isa.txt"
ISA=$(sed -n '1s/.*CPU ISA //p' "$TMP/isa.txt")

# model lm_head subset threads -> $TMP/<model>-<head>-<subset>-<threads>.json
run() {
  local model=$1 head=$2 subset=$3 th=$4 args
  if [ "$model" = smollm2 ]; then
    args=(--client-bundle "$B/smollm2-$head/client" --server-bundle "$B/smollm2-$head/server")
  else
    args=(--client-bundle "$B/llama3-8b-$head")
  fi
  [ "$subset" != 0 ] && args+=(--vocab-subset "$subset")
  OMP_NUM_THREADS=$th $INF bench --client-only "${args[@]}" --threads "$th" --runs "$RUNS" --warmup 1 \
    --max-tokens 32 --quiet --json "$TMP/$model-$head-$subset-$th.json" 2>/dev/null
}
for th in 1 2; do
  for head in f16 int8; do
    for subset in 0 8192; do run smollm2 $head $subset $th; done
    for subset in 0 16384; do run llama3-8b $head $subset $th; done
  done
  run llama3-8b int8-nofold 0 $th
done

# greedy text: identical with every optimization on and off (subset, threads)
same=true
for head in f16 int8; do
  ref=""
  for th in 1 2; do
    for subset in "" "--vocab-subset 8192"; do
      out=$(OMP_NUM_THREADS=$th $INF run --client-bundle "$B/smollm2-$head/client" --server-bundle "$B/smollm2-$head/server" \
            --prompt "The capital of France is" --temperature 0 --max-tokens 48 --threads $th $subset --quiet 2>/dev/null)
      [ -z "$ref" ] && ref=$out
      [ "$out" = "$ref" ] || same=false
    done
  done
  echo "$ref" > "$TMP/text-$head.txt"
done

./$BUILD/bench/client_kernels --reps 5 --json "$TMP/kernels.json" >&2

python3 - "$TMP" "$same" "$ISA" bench/results/client_speed.json <<'PY'
import json, os, sys
tmp, same, isa, out = sys.argv[1], sys.argv[2] == "true", sys.argv[3], sys.argv[4]
CLIENT = ["embed", "cloak", "serialize", "seal", "open", "uncloak", "lm_head", "sample"]
PLAN = {"smollm2": None, "llama3-8b": 24.0}  # seed plan 004: ~24 ms/token on a CPU for 8B
NAME = {"smollm2": "SmolLM2-135M (tied, real weights)", "llama3-8b": "Llama-3.1-8B shapes (untied, random)"}
cpu = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip(); break
rows = []
runs = [(m, h, s) for m in ["smollm2", "llama3-8b"] for h in ["f16", "int8"]
        for s in ([0, 8192] if m == "smollm2" else [0, 16384])] + [("llama3-8b", "int8-nofold", 0)]
for model, head, subset in runs:
            for th in [1, 2]:
                j = json.load(open(os.path.join(tmp, f"{model}-{head}-{subset}-{th}.json")))
                ph = j["phases"]
                ms = sum(ph[p]["mean_ms"] for p in CLIENT if p in ph)
                vs = j.get("vocab_subset", {})
                rows.append({"model": model, "lm_head": head.split("-")[0], "vocab_subset": subset, "threads": th,
                             "rotation": "--no-fold: the client rotates" if head.endswith("nofold") else "folded",
                             "client_ms_per_token": round(ms, 3),
                             "phases_mean_ms": {p: round(ph[p]["mean_ms"], 3) for p in CLIENT if p in ph},
                             "lm_head_p50_ms": round(ph["lm_head"]["p50_ms"], 3),
                             "lm_head_p95_ms": round(ph["lm_head"]["p95_ms"], 3),
                             "subset_hit_rate": vs.get("hit_rate"),
                             "plan_estimate_ms": PLAN[model], "tokens": j["decode_tokens"]})
print(f"CPU: {cpu}, kernels: {isa}; client ms/token = mean of embed+cloak+serialize+seal+open+uncloak+lm_head+sample over the decode tokens")
print("| model | lm_head | rotation | --vocab-subset | threads | client ms/token | cloak+uncloak ms | lm_head p50 ms | subset hit rate | plan estimate |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    hit = "-" if r["subset_hit_rate"] is None else f"{100 * r['subset_hit_rate']:.0f}%"
    plan = "-" if r["plan_estimate_ms"] is None else f"~{r['plan_estimate_ms']:.0f} ms"
    cl = r["phases_mean_ms"].get("cloak", 0) + r["phases_mean_ms"].get("uncloak", 0)
    print(f"| {NAME[r['model']]} | {r['lm_head']} | {r['rotation']} | {r['vocab_subset'] or 'off'} | {r['threads']} | "
          f"{r['client_ms_per_token']:.2f} | {cl:.2f} | {r['lm_head_p50_ms']:.2f} | {hit} | {plan} |")
print(f"greedy text identical with the subset on/off and 1/2 threads (SmolLM2, f16 and int8 each): {same}")
k = json.load(open(os.path.join(tmp, "kernels.json")))
print("\nkernels at 128256 x 4096 (lm_head) and 4096 x 4096 (rotation):")
print("| kernel | threads | ms | GB/s |\n|---|---|---|---|")
for r in k["rows"]:
    print(f"| {r['kernel']} | {r['threads']} | {r['ms']:.2f} | {r['gb_s']:.1f} |")
texts = {h: open(os.path.join(tmp, f"text-{h}.txt")).read().strip() for h in ["f16", "int8"]}
json.dump({"cpu": cpu, "isa": isa, "cores": os.cpu_count(), "rows": rows, "greedy_identical": same,
           "greedy_text": texts, "kernels": k}, open(out, "w"), indent=1)
print(f"wrote {out}")
PY
