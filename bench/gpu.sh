#!/usr/bin/env bash
# bench/gpu.sh — the CUDA backend's correctness and speed, in one device call.
#
#   bench/gpu.sh [test|bench|all|smollm2] [--llama DIR] [--out DIR]
#
#   test   tests/test_cuda: random f32/f16/bf16/int4 models, unfolded gains,
#          a 600-token prefill, the KV mirror, SmolLM2 f16/bf16/int4 (when
#          .gpu/smollm2.gguf or its parts are there) and an 8B-shaped int4
#          bundle (16 decode steps: the CPU reference is slow at 8B)
#   bench  bench_gpu on random bundles from bench/mkbundle: llama3-8b int4,
#          llama3-8b f16, smollm2-135m f16: decode ms/token at context 128
#          and 2048, prefill tokens/s at 512, copy bandwidth, floor = weight
#          bytes / bandwidth, device memory; with --llama, llama.cpp's
#          llama-bench -p 512 -n 128 on random Q4_0 and Q4_K_M 8B GGUFs
#   all    both (default)
#   smollm2  only the SmolLM2 tests and the SmolLM2 bench (the last call of
#          the multi-call sequence, once all GGUF parts are there)
# Results: $OUT (or --out DIR, default ./gpu-results): test_cuda.log,
# <label>.json per bundle, llama-*.json, summary.txt (also printed last).
#
# It runs the binaries bench/gpu_pack.sh built HERE (the device image has
# CUDA but not the Debian libraries: openblas, cjson, curl, criterion...):
#   here:   bench/gpu_pack.sh            -> .gpu/pack.tar.xz, .gpu-sm1/ .gpu-sm2/ ...
#   device: the call sequence gpu_pack.sh prints (the SmolLM2 GGUF is larger
#           than one call may carry, so it travels in parts over 2-3 calls
#           made back to back; the last one runs the SmolLM2 tests).
#
# llama.cpp side by side (nothing of it is committed): build it from source
# on this machine and carry the binaries (the device cannot fetch):
#   1. fetch the snapshot: the repository ggerganov/llama.cpp (Feb 2025);
#      git -C <mirror> archive HEAD | tar -x -C /tmp/llama.cpp
#   2. cmake -S /tmp/llama.cpp -B /tmp/llama.cpp/build -DGGML_CUDA=ON \
#        -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF \
#        -DCMAKE_EXE_LINKER_FLAGS="-L/usr/local/cuda/lib64/stubs" \
#        && cmake --build /tmp/llama.cpp/build -j2 --target llama-bench   (~11 min on 2 cores)
#   3. mkdir -p .gpu/llama && cp /tmp/llama.cpp/build/bin/llama-bench .gpu/llama/ \
#        && cp -r /tmp/llama.cpp/gguf-py .gpu/llama/
#   4. device: bench/gpu.sh bench --llama .gpu/llama
#   The 8B GGUFs are written on the device by bench/gpu_llama_gguf.py (random
#   blocks of the right types, no 16 GB f16 model first).
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=all
LLAMA=""
OUTDIR="${OUT:-$PWD/gpu-results}"
while [ $# -gt 0 ]; do
  case "$1" in
    test|bench|all|smollm2) MODE=$1 ;;
    --llama) LLAMA=$2; shift ;;
    --out) OUTDIR=$2; shift ;;
    *) echo "usage: bench/gpu.sh [test|bench|all|smollm2] [--llama DIR] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUTDIR"
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }

# ---- unpack ----
W=/tmp/infemeral-gpu
mkdir -p "$W"
if [ ! -x "$W/pack/bin/bench_gpu" ]; then
  [ -f .gpu/pack.tar.xz ] || { echo "gpu.sh: .gpu/pack.tar.xz is missing: run bench/gpu_pack.sh here and carry .gpu" >&2; exit 1; }
  python3 -c "import tarfile,sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" .gpu/pack.tar.xz "$W" || exit 1
fi
P=$W/pack
CUDA_LIB=""
if command -v nvcc >/dev/null; then CUDA_LIB=$(dirname "$(dirname "$(command -v nvcc)")")/lib64; fi
export LD_LIBRARY_PATH="$P/lib:${CUDA_LIB:+$CUDA_LIB:}/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export OMP_NUM_THREADS=$(nproc)
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUTDIR/gpu.txt"
for b in "$P"/bin/*; do
  ldd "$b" | grep -q "not found" && { echo "gpu.sh: $b misses libraries:" >&2; ldd "$b" | grep "not found" >&2; }
done

# SmolLM2: whole, or the parts gpu_pack.sh split it into (.gpu-smN/, one or
# two per call: the file is larger than one call may carry). Parts are kept in
# $W between calls while the machine stays warm (30 s after a call).
SMOL=""
if [ -f .gpu/smollm2.gguf ]; then SMOL=$PWD/.gpu/smollm2.gguf
elif [ -f .gpu/smollm2.parts ]; then
  for f in .gpu-sm*/smollm2.gguf.part-*; do [ -f "$f" ] && cp "$f" "$W"/; done
  have=$(ls "$W"/smollm2.gguf.part-* 2>/dev/null | wc -l)
  if [ "$have" -ge "$(cat .gpu/smollm2.parts)" ]; then
    cat "$W"/smollm2.gguf.part-* > "$W/smollm2.gguf"
    if [ "$(sha256sum < "$W/smollm2.gguf" | cut -d' ' -f1)" = "$(cut -d' ' -f1 .gpu/smollm2.sha256)" ]; then
      SMOL=$W/smollm2.gguf
    else
      echo "gpu.sh: the SmolLM2 parts do not add up (sha256); the SmolLM2 tests will skip" >&2
    fi
  else
    echo "gpu.sh: SmolLM2: $have of $(cat .gpu/smollm2.parts) parts here so far (kept in $W); the SmolLM2 tests will skip" >&2
  fi
fi

mk() { # preset weights -> dir (cached in /tmp across calls on a warm machine)
  local d=$W/$1-$2
  [ -f "$d/server/model.safetensors" ] || "$P/bin/mkbundle" --preset "$1" --weights "$2" --out "$d" >&2 || return 1
  echo "$d"
}

# ---- correctness ----
if [ "$MODE" = smollm2 ]; then
  echo "== test_cuda SmolLM2 ($(elapsed) s)"
  INF_SMOLLM2="$SMOL" "$P/bin/test_cuda" --jobs 1 --verbose --filter 'cuda/smollm2*' 2>&1 |
    tee "$OUTDIR/test_cuda_smollm2.log" | grep -E "rel L2|PASS|FAIL|SKIP|Synthesis|error"
  if [ -n "$SMOL" ]; then
    d=$W/smollm2-real-f16
    [ -f "$d/server/model.safetensors" ] || "$P/bin/infemeral" prep --model "$SMOL" --out "$d" --weights f16 >&2
    "$P/bin/bench_gpu" --server "$d/server" --label smollm2-real-f16 --json "$OUTDIR/smollm2-real-f16.json" 2>&1 |
      tee "$OUTDIR/smollm2-real-f16.txt"
  fi
elif [ "$MODE" != bench ]; then
  B8=$(mk llama3-8b int4)
  echo "== test_cuda ($(elapsed) s)"
  INF_SMOLLM2="$SMOL" INFEMERAL_TEST_8B_BUNDLE="$B8" INFEMERAL_TEST_8B_STEPS=16 \
    "$P/bin/test_cuda" --jobs 1 --verbose 2>&1 | tee "$OUTDIR/test_cuda.log" | grep -E "rel L2|PASS|FAIL|SKIP|Synthesis|error"
fi

# ---- speed ----
if [ "$MODE" = bench ] || [ "$MODE" = all ]; then
  for spec in "llama3-8b int4" "llama3-8b f16" "smollm2-135m f16"; do
    set -- $spec
    d=$(mk "$1" "$2") || { echo "gpu.sh: mkbundle $1 $2 failed" >&2; continue; }
    echo "== bench $1 $2 ($(elapsed) s)"
    if [ "$1-$2" = llama3-8b-int4 ] && [ -x "$P/bin/infemeral-worker" ]; then
      # cold start (issue 5): process start -> first 200 on /ping, weights uploaded to the GPU
      [ -f "$W/keys/worker.key" ] || "$P/bin/infemeral" keygen --out "$W/keys" >/dev/null
      sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true # a cold page cache where allowed
      port=18731
      t0=$(date +%s.%N)
      INFEMERAL_WORKER_KEY_FILE="$W/keys/worker.key" INFEMERAL_KV_DIR="$W/kv" \
        "$P/bin/infemeral-worker" serve --bundle "$d/server" --port $port > "$OUTDIR/coldstart-worker.log" 2>&1 &
      wp=$!
      python3 - "$port" "$t0" "$OUTDIR/coldstart.json" <<'PY'
import json, sys, time, urllib.request
port, t0, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
for _ in range(6000):
    try:
        if urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1).status == 200:
            s = time.time() - t0
            json.dump({"bundle": "llama3-8b int4 (random)", "cold_start_s": s}, open(out, "w"))
            print(f"cold start: {s:.2f} s to the first 200 on /ping")
            break
    except Exception:
        pass
    time.sleep(0.05)
else:
    print("cold start: no 200 on /ping within 300 s")
PY
      kill $wp 2>/dev/null; wait $wp 2>/dev/null
    fi
    "$P/bin/bench_gpu" --server "$d/server" --label "$1-$2" --json "$OUTDIR/$1-$2.json" 2>&1 | tee "$OUTDIR/$1-$2.txt"
    rm -rf "$d/client" # the bench needs only the server bundle; keep the disk for the next one
  done
  if [ -n "$LLAMA" ] && [ ! -x "$LLAMA/llama-bench" ] && [ -f "$LLAMA/llama-bench.xz" ]; then
    xz -dc "$LLAMA/llama-bench.xz" > "$W/llama-bench" && chmod +x "$W/llama-bench" # carried compressed (91 MB)
    LLB=$W/llama-bench
  else
    LLB=$LLAMA/llama-bench
  fi
  if [ -n "$LLAMA" ]; then
    for q in q4_0 q4_k_m; do
      g=$W/llama-8b-$q.gguf
      echo "== llama.cpp $q ($(elapsed) s)"
      [ -f "$g" ] || python3 bench/gpu_llama_gguf.py --gguf-py "$LLAMA/gguf-py" --type $q --out "$g" || continue
      "$LLB" -m "$g" -p 512 -n 128 -ngl 99 -o json > "$OUTDIR/llama-$q.json" 2> "$OUTDIR/llama-$q.log" ||
        tail -5 "$OUTDIR/llama-$q.log"
    done
  fi
fi

# ---- the client step on the device (client/cuda/; issue 7 item 4) ----
# tests/test_client_cuda: the CUDA client path against the CPU client path
# (random f16/int8 bundles and SmolLM2 f16/int8: lookup + rotation, logits,
# int8 bit-identical, 64 greedy steps of a split run). Then the client's time
# per token, `infemeral bench --client-only` (an in-process echo worker behind
# the real seal/open, so only the client's phases count) with --device cuda
# and cpu, for SmolLM2-135M and Llama-3.1-8B shapes (bench/mkbundle's random
# client weights; bench/client_int8 makes the int8 lm_head), f16 and int8
# heads. Target: <= 1 ms/token at 8B on an H100. Results: $OUTDIR/client/
# (out of the summary's glob), client/summary.txt.
if [ -x "$P/bin/test_client_cuda" ] && [ "$MODE" != bench ]; then
  echo "== test_client_cuda ($(elapsed) s)"
  INF_SMOLLM2="$SMOL" INFEMERAL_BIN="$P/bin/infemeral" "$P/bin/test_client_cuda" --jobs 1 --verbose 2>&1 |
    tee "$OUTDIR/test_client_cuda.log" | grep -E "PASS|FAIL|SKIP|Synthesis|Assertion|error"
fi
C=$OUTDIR/client
client_bench() { # label client-dir device
  "$P/bin/infemeral" bench --client-only --client-bundle "$2" --device "$3" --runs 3 --warmup 1 --max-tokens 64 \
    --json "$C/$1-$3.json" > "$C/$1-$3.txt" 2>&1 || { echo "gpu.sh: client bench $1 $3 failed:" >&2; tail -3 "$C/$1-$3.txt" >&2; }
}
if [ "$MODE" != test ]; then
  mkdir -p "$C"
  if [ -n "$SMOL" ]; then
    for head in f16 int8; do
      d=$W/client-smollm2-$head
      [ -f "$d/client/secret.key" ] || "$P/bin/infemeral" prep --model "$SMOL" --out "$d" --weights f16 --lm-head $head --quiet >&2
      echo "== client step smollm2 $head ($(elapsed) s)"
      for dev in cuda cpu; do client_bench "smollm2-$head" "$d/client" $dev; done
    done
  fi
  if [ "$MODE" = bench ] || [ "$MODE" = all ]; then
    d=$W/client-llama3-8b
    [ -f "$d/client/secret.key" ] || "$P/bin/mkbundle" --preset llama3-8b --weights f16 --client-only --out "$d" >&2
    if [ -x "$P/bin/client_int8" ] && [ ! -d "$d-int8" ]; then "$P/bin/client_int8" --in "$d/client" --out "$d-int8" >&2; fi
    echo "== client step llama3-8b ($(elapsed) s)"
    for dev in cuda cpu; do client_bench llama3-8b-f16 "$d/client" $dev; done
    if [ -d "$d-int8" ]; then for dev in cuda cpu; do client_bench llama3-8b-int8 "$d-int8" $dev; done; fi
  fi
  python3 - "$C" <<'PY' | tee "$C/summary.txt"
import json, glob, os, sys
c = sys.argv[1]
CLIENT = ["embed", "cloak", "serialize", "seal", "open", "uncloak", "lm_head", "sample"]
DEVICE = ["embed", "cloak", "uncloak", "lm_head", "sample"]  # what the device does (cloak/uncloak: 0 on cuda)
print("client ms/token (mean over decode tokens); device part = embed+rotation, un-rotation, norm, lm_head, sampling")
print("%-16s %-5s %12s %14s %12s" % ("bundle", "dev", "client ms", "device part ms", "lm_head p95"))
for f in sorted(glob.glob(os.path.join(c, "*.json"))):
    j = json.load(open(f)); ph = j["phases"]
    label, dev = os.path.basename(f)[:-5].rsplit("-", 1)
    tot = sum(ph[p]["mean_ms"] for p in CLIENT if p in ph)
    part = sum(ph[p]["mean_ms"] for p in DEVICE if p in ph)
    print("%-16s %-5s %12.3f %14.3f %12.3f" % (label, dev, tot, part, ph["lm_head"]["p95_ms"]))
    if label.startswith("llama3-8b") and dev == "cuda":
        print("%-16s target <= 1 ms/token on an H100: %s" % ("", "met" if tot <= 1.0 else "NOT met"))
PY
fi

# ---- summary ----
python3 - "$OUTDIR" <<'PY' | tee "$OUTDIR/summary.txt"
import json, glob, os, sys
d = sys.argv[1]
rows = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(d, "*.json"))) if not os.path.basename(f).startswith("llama-")]
llama = {}
for q in ("q4_0", "q4_k_m"):
    try:
        for r in json.load(open(os.path.join(d, "llama-%s.json" % q))):
            kind = "pp" if r.get("n_prompt", 0) > 0 else "tg"
            llama[(q, kind)] = r["avg_ts"]
    except Exception:
        pass
print("%-18s %8s %9s %14s %14s %8s %10s %10s" % ("bundle", "GB", "floor ms", "decode@128 ms", "decode@2048 ms",
      "x floor", "pp512 ms", "pp tok/s"))
for r in rows:
    dec = {x["ctx"]: x for x in r["decode"]}
    d128, d2k = dec.get(128, {}), dec.get(2048, {})
    print("%-18s %8.2f %9.3f %14.3f %14.3f %8.2f %10.2f %10.0f" % (r["label"], r["weight_bytes"] / 1e9, r["floor_ms"],
          d128.get("device_ms", float("nan")), d2k.get("device_ms", float("nan")),
          d128.get("device_ms", float("nan")) / r["floor_ms"], r["prefill"]["device_ms"], r["prefill"]["tok_s"]))
    print("%-18s wall decode@128 %.3f ms (%.0f tok/s), memory at open %.2f GiB, KV %.1f MiB per 1k tokens" % ("",
          d128.get("wall_ms", float("nan")), 1e3 / d128.get("wall_ms", float("nan")), r["memory"]["open_bytes"] / 2**30,
          r["memory"]["kv_bytes_per_token"] * 1000 / 2**20))
for (q, kind), ts in sorted(llama.items()):
    print("llama.cpp %-7s %s: %.1f tok/s" % (q, "pp512" if kind == "pp" else "tg128", ts))
ours = {r["label"]: r for r in rows}
i4 = ours.get("llama3-8b-int4")
if i4 and ("q4_0", "tg") in llama:
    tg = 1e3 / [x for x in i4["decode"] if x["ctx"] == 128][0]["wall_ms"]
    print("8B int4 decode vs llama.cpp Q4_0 tg128: %.2fx (target >= 2x); vs floor: %.2fx (target <= 1.5x)" % (
          tg / llama[("q4_0", "tg")], [x for x in i4["decode"] if x["ctx"] == 128][0]["device_ms"] / i4["floor_ms"]))
if i4:
    print("8B int4 prefill 512: %.1f ms (target <= 40 ms)" % i4["prefill"]["device_ms"])
PY
echo "gpu.sh: done in $(elapsed) s"
