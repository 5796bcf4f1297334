#!/usr/bin/env bash
# bench/gpu_pack.sh — builds the CUDA tests and benchmarks HERE (release, no
# sanitizers) and packs them for the device machine, whose image has CUDA but
# not the Debian libraries they link (openblas, lapack, cjson, curl, zstd,
# criterion, microhttpd...):
#
#   .gpu/pack.tar.xz      bin/{test_cuda,bench_gpu,mkbundle,infemeral} and
#                         lib/ = every shared library ldd resolves, except
#                         glibc's, libstdc++/libgcc_s (the device's are newer)
#                         and CUDA's (the device's toolkit provides them)
#   .gpu-smN/             the SmolLM2 GGUF in parts of PART_MIB (default 40),
#                         .gpu/smollm2.{parts,sha256}: one device call may
#                         carry 64 MiB with the working tree, the file is 94 MiB
#
# All of it is ignored by git (.gitignore: /.gpu*/). Then, on the device,
# back to back (the machine stays warm 30 s; parts wait in /tmp there):
#   run(command="bench/gpu.sh all", carry=[".gpu", ".gpu-sm1"])
#   run(command="bench/gpu.sh smollm2", carry=[".gpu", ".gpu-sm2"])
# (the script prints the exact sequence for the sizes it made).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
PART_MIB=${PART_MIB:-40}
SMOL=${INF_SMOLLM2:-$HOME/.cache/infemeral/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -d "$BUILD" ] || meson setup "$BUILD" --buildtype=release -Dcuda=enabled >/dev/null
ninja -C "$BUILD" -j"${JOBS:-2}" tests/test_cuda bench/bench_gpu bench/mkbundle client/infemeral >/dev/null
rm -rf .gpu .gpu-sm*
mkdir -p .gpu
S=$(mktemp -d)
trap 'rm -rf "$S"' EXIT
mkdir -p "$S/pack/bin" "$S/pack/lib"
cp "$BUILD/tests/test_cuda" "$BUILD/bench/bench_gpu" "$BUILD/bench/mkbundle" "$BUILD/client/infemeral" \
  "$BUILD/worker/infemeral-worker" "$S/pack/bin/"
# the CUDA client path's tests, and client_int8 (the 8B int8 client bundle) when this tree builds it
ninja -C "$BUILD" -j"${JOBS:-2}" tests/test_client_cuda >/dev/null && cp "$BUILD/tests/test_client_cuda" "$S/pack/bin/"
{ ninja -C "$BUILD" -j"${JOBS:-2}" bench/client_int8 >/dev/null 2>&1 && cp "$BUILD/bench/client_int8" "$S/pack/bin/"; } || true
strip --strip-debug "$S"/pack/bin/* 2>/dev/null || true
for b in "$S"/pack/bin/*; do ldd "$b"; done | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libresolv.so*|ld-linux*) ;;
    libstdc++.so*|libgcc_s.so*) ;;
    libcudart*|libcublas*|libcuda.so*) ;;
    *) cp -L "$lib" "$S/pack/lib/" ;;
  esac
done
tar -C "$S" -cf - pack | xz -T0 -6 > .gpu/pack.tar.xz
echo "gpu_pack: .gpu/pack.tar.xz $(du -m .gpu/pack.tar.xz | cut -f1) MiB" >&2
# llama.cpp's llama-bench, built here beforehand (steps at the top of bench/gpu.sh; LLAMA_SRC is
# that source tree): stripped and xz'd (91 MB -> ~32 MB) with its gguf-py into .gpu-llama, carried
# in a call of its own: run(command="bench/gpu.sh bench --llama .gpu-llama", carry=[".gpu", ".gpu-llama"])
LLAMA_SRC=${LLAMA_SRC:-}
if [ -n "$LLAMA_SRC" ] && [ -x "$LLAMA_SRC/build/bin/llama-bench" ] && [ -d "$LLAMA_SRC/gguf-py" ]; then
  rm -rf .gpu-llama && mkdir -p .gpu-llama
  strip -o .gpu-llama/llama-bench "$LLAMA_SRC/build/bin/llama-bench"
  xz -T0 -9 .gpu-llama/llama-bench
  cp -r "$LLAMA_SRC/gguf-py" .gpu-llama/
  echo "gpu_pack: .gpu-llama $(du -sm .gpu-llama | cut -f1) MiB (llama-bench.xz + gguf-py)" >&2
fi
if [ -f "$SMOL" ]; then
  split -b "${PART_MIB}M" -a 1 "$SMOL" "$S/smollm2.gguf.part-"
  n=0
  for p in "$S"/smollm2.gguf.part-*; do
    n=$((n + 1))
    mkdir -p ".gpu-sm$n"
    mv "$p" ".gpu-sm$n/"
  done
  echo "$n" > .gpu/smollm2.parts
  sha256sum < "$SMOL" > .gpu/smollm2.sha256
  echo "gpu_pack: SmolLM2 in $n parts of <= $PART_MIB MiB" >&2
  echo "device calls, back to back:" >&2
  echo "  1. carry [\".gpu\", \".gpu-sm1\"]  command: bench/gpu.sh all" >&2
  for i in $(seq 2 "$n"); do
    if [ "$i" -lt "$n" ]; then echo "  $i. carry [\".gpu\", \".gpu-sm$i\"]  command: mkdir -p /tmp/infemeral-gpu && cp .gpu-sm*/smollm2.gguf.part-* /tmp/infemeral-gpu/" >&2
    else echo "  $i. carry [\".gpu\", \".gpu-sm$i\"]  command: bench/gpu.sh smollm2" >&2; fi
  done
else
  echo "gpu_pack: no SmolLM2 GGUF at $SMOL: the SmolLM2 tests will skip" >&2
  echo "device call: carry [\".gpu\"]  command: bench/gpu.sh all" >&2
fi
