#!/usr/bin/env bash
# tests/run.sh — the test command (CI runs it through .ci/run).
#
# Installs what is missing, fetches the test model, builds with -Werror and
# AddressSanitizer + UndefinedBehaviorSanitizer, and runs every suite.
# The last line is "N passed, N failed, N skipped" (Criterion test cases).
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=$(./deploy/deps.sh | tail -n 1)
BUILD=build-test
if [ ! -d "$BUILD" ]; then
  meson setup "$BUILD" --buildtype=debugoptimized -Dwerror=true \
    -Db_sanitize=address,undefined -Db_lundef=false -Dsmollm2_path="$MODEL" >/dev/null
else
  meson configure "$BUILD" -Dsmollm2_path="$MODEL" >/dev/null
fi
ninja -C "$BUILD"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# Criterion prints a [SKIP] line (e.g. "skipped: no GPU") only when verbose; the closing count needs it.
export CRITERION_VERBOSITY_LEVEL=1
status=0
meson test -C "$BUILD" --print-errorlogs --num-processes 1 "$@" || status=$?

# Sum Criterion's per-suite synthesis lines into one closing line.
python3 - "$BUILD/meson-logs/testlog.txt" <<'PY' || true
import re, sys
txt = open(sys.argv[1], errors="replace").read()
p = f = s = 0
for m in re.finditer(r"Synthesis: Tested: (\d+) \| Passing: (\d+) \| Failing: (\d+) \| Crashing: (\d+)", txt):
    t, ok, bad, crash = map(int, m.groups())
    p += ok; f += bad + crash
for m in re.finditer(r"\[SKIP\]", txt):
    s += 1
# the shell end-to-end suites print their own "N passed, N failed, N skipped"
for m in re.finditer(r"^(\d+) passed, (\d+) failed, (\d+) skipped$", txt, re.M):
    p += int(m.group(1)); f += int(m.group(2)); s += int(m.group(3))
print(f"{p} passed, {f} failed, {s} skipped")
PY
exit $status
