#!/usr/bin/env bash
# e2e_http.sh — the product path over real loopback HTTP: prep, keygen,
# infemeral-worker serve, infemeral generate / chat.
#
# If this fails, a user who follows the README cannot chat with a worker:
# the text through the sealed, cloaked wire differs from the local run, a
# session does not survive a worker restart, or auth failures are not
# reported clearly.
#
# usage: e2e_http.sh INFEMERAL WORKER ASSETS_DIR [SMOLLM2_GGUF]
set -u
BIN=$1
WORKER=$2
ASSETS=$3
SMOL=${4:-}
pass=0 fail=0 skip=0
ok() { pass=$((pass + 1)); echo "ok - $1"; }
bad() { fail=$((fail + 1)); echo "not ok - $1"; }
tmp=$(mktemp -d)
wpid=""
cleanup() { [ -n "$wpid" ] && kill -9 "$wpid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_worker() { # bundle-dir [extra env...]; REUSE_PORT=1 keeps $PORT_NUM
  local bundle=$1
  shift
  [ "${REUSE_PORT:-0}" = 1 ] || PORT_NUM=$(free_port)
  env "$@" INFEMERAL_WORKER_KEY_FILE="$tmp/keys/worker.key" INFEMERAL_KV_DIR="$tmp/kv" \
    "$WORKER" serve --bundle "$bundle" --port "$PORT_NUM" --quiet >>"$tmp/worker.log" 2>&1 7>&- &
  wpid=$!
  for _ in $(seq 1 100); do
    curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT_NUM/ping" 2>/dev/null | grep -q 200 && return 0
    sleep 0.1
  done
  echo "worker did not come up:"; cat "$tmp/worker.log"
  return 1
}
stop_worker() { [ -n "$wpid" ] && kill "$1" "$wpid" 2>/dev/null; wait "$wpid" 2>/dev/null; wpid=""; }

"$BIN" keygen --out "$tmp/keys" >"$tmp/keygen.out" || bad "keygen failed"
grep -q fingerprint "$tmp/keygen.out" && ok "keygen prints the fingerprint" || bad "keygen output lacks the fingerprint"
[ "$(stat -c %a "$tmp/keys/worker.key")" = 600 ] && ok "worker.key is mode 600" || bad "worker.key mode"

# 1. stories260K through the wire (f32 states) == llama2.c's text, byte for byte
ST="$ASSETS/stories260K"
"$BIN" prep --model "$ST/stories260K.bin" --tokenizer "$ST/tok512.bin" --out "$tmp/st" --weights f32 --quiet
start_worker "$tmp/st/server" || exit 1
G=("$BIN" generate --client-bundle "$tmp/st/client" --endpoint "http://127.0.0.1:$PORT_NUM" --worker-pub "$tmp/keys/worker.pub")
"${G[@]}" --prompt "" --temperature 0 --max-tokens 200 --wire-dtype f32 >"$tmp/gen.txt" 2>"$tmp/gen.err"
if cmp -s "$tmp/gen.txt" "$ST/expected_greedy_200.txt"; then
  ok "generate over HTTP reproduces llama2.c's greedy text byte for byte"
else
  bad "generate over HTTP differs from expected_greedy_200.txt"; head -c 300 "$tmp/gen.txt"; cat "$tmp/gen.err"
fi
# the default f16 wire: same text as the local split run with the same rounding is not
# guaranteed, so only check it runs and stays on topic
"${G[@]}" --prompt "Once upon a time" --temperature 0 --max-tokens 30 >"$tmp/gen16.txt" 2>"$tmp/gen16.err" \
  && [ -s "$tmp/gen16.txt" ] && ok "generate with f16 states on the wire" || { bad "f16 wire"; cat "$tmp/gen16.err"; }

# 2. wrong pinned key -> clear auth error; the worker keeps serving
"$BIN" keygen --out "$tmp/other" >/dev/null
"$BIN" generate --client-bundle "$tmp/st/client" --endpoint "http://127.0.0.1:$PORT_NUM" --worker-pub "$tmp/other/worker.pub" \
  --prompt "x" --max-tokens 2 >/dev/null 2>"$tmp/wrong.err"
[ $? -ne 0 ] && grep -qi "auth" "$tmp/wrong.err" && ok "a wrong worker key is refused as an auth error" || { bad "wrong worker key:"; cat "$tmp/wrong.err"; }
stop_worker -TERM

# 3. bearer token
start_worker "$tmp/st/server" INFEMERAL_API_KEY=s3cret || exit 1
G=("$BIN" generate --client-bundle "$tmp/st/client" --endpoint "http://127.0.0.1:$PORT_NUM" --worker-pub "$tmp/keys/worker.pub")
env -u INFEMERAL_API_KEY "${G[@]}" --prompt "x" --max-tokens 2 >/dev/null 2>"$tmp/tok.err"
[ $? -ne 0 ] && grep -q "API key" "$tmp/tok.err" && ok "missing bearer token -> clear error" || { bad "bearer token:"; cat "$tmp/tok.err"; }
INFEMERAL_API_KEY=s3cret "${G[@]}" --prompt "" --temperature 0 --max-tokens 200 --wire-dtype f32 >"$tmp/gen2.txt" 2>/dev/null
cmp -s "$tmp/gen2.txt" "$ST/expected_greedy_200.txt" && ok "with the bearer token it works" || bad "with the bearer token"
stop_worker -TERM

# 4. SmolLM2: a multi-turn chat through the worker, surviving a SIGKILL between turns
if [ -n "$SMOL" ] && [ -f "$SMOL" ]; then
  "$BIN" prep --model "$SMOL" --out "$tmp/smol" --quiet
  start_worker "$tmp/smol/server" || exit 1
  C=("$BIN" chat --client-bundle "$tmp/smol/client" --endpoint "http://127.0.0.1:$PORT_NUM" --worker-pub "$tmp/keys/worker.pub" --temperature 0 --max-tokens 40)
  printf 'What is the capital of France?\nAnd of Italy?\n' | "${C[@]}" >"$tmp/chat.txt" 2>"$tmp/chat.err"
  if grep -q Paris "$tmp/chat.txt" && grep -q Rome "$tmp/chat.txt"; then ok "two-turn chat over HTTP answers both"
  else bad "two-turn chat over HTTP:"; cat "$tmp/chat.txt" "$tmp/chat.err"; fi
  # the second turn sent only its new tokens (the worker kept the session)
  n2=$(grep -o 'prompt: [0-9]*' "$tmp/chat.err" | sed -n 2p | cut -d' ' -f2)
  [ -n "$n2" ] && [ "$n2" -lt 30 ] && ok "turn 2 sent only its $n2 new tokens" || bad "turn 2 resent the conversation ($n2 tokens)"
  # a conversation longer than the context window keeps going: the client keeps the first
  # tokens (attention sinks) and the latest, and the worker recomputes the window after them
  printf 'Tell me about Paris in two sentences.\nAnd about Rome?\nAnd about Berlin?\nWhich of the three is largest?\n' |
    "${C[@]}" --ctx 160 >"$tmp/win.txt" 2>"$tmp/win.err"
  if [ "$(grep -c 'tok/s' "$tmp/win.err")" = 4 ] && grep -q "keeping the first 4" "$tmp/win.err"; then
    ok "a 4-turn chat slides its window past --ctx 160 through the worker"
  else
    bad "sliding window:"; cat "$tmp/win.err"
  fi
  # kill -9 the worker between two turns of one conversation; a new worker on the same
  # address continues the session from the encrypted store
  mkfifo "$tmp/in"
  "${C[@]}" <"$tmp/in" >"$tmp/chat2.txt" 2>"$tmp/chat2.err" &
  cpid=$!
  exec 7>"$tmp/in"
  echo "What is the capital of France?" >&7
  for _ in $(seq 1 200); do grep -q "tok/s" "$tmp/chat2.err" && break; sleep 0.1; done
  stop_worker -KILL
  REUSE_PORT=1 start_worker "$tmp/smol/server" || exit 1
  echo "And of Italy?" >&7
  exec 7>&-
  wait "$cpid"
  if grep -q Paris "$tmp/chat2.txt" && grep -q Rome "$tmp/chat2.txt"; then
    ok "a conversation survives kill -9 of its worker (the session came back from the store)"
  else
    bad "conversation across a killed worker:"; cat "$tmp/chat2.txt" "$tmp/chat2.err"
  fi
  n2=$(grep -o 'prompt: [0-9]*' "$tmp/chat2.err" | sed -n 2p | cut -d' ' -f2)
  [ -n "$n2" ] && [ "$n2" -lt 30 ] && ok "after the restart, turn 2 still sent only its new tokens" || bad "turn 2 after restart sent $n2 tokens"
  stop_worker -KILL
  "${C[@]}" --prompt "Hi" >/dev/null 2>"$tmp/dead.err"
  [ $? -ne 0 ] && grep -qiE "connect" "$tmp/dead.err" && ok "a dead worker is reported, not hung on" || { bad "dead worker not reported:"; cat "$tmp/dead.err"; }
else
  skip=$((skip + 5)); echo "ok - # SKIP SmolLM2 GGUF not present"
fi

# 5. --profile and bench: the per-token phase table and the JSON report
start_worker "$tmp/st/server" || exit 1
G=("$BIN" generate --client-bundle "$tmp/st/client" --endpoint "http://127.0.0.1:$PORT_NUM" --worker-pub "$tmp/keys/worker.pub")
"${G[@]}" --prompt "Once upon a time" --temperature 0 --max-tokens 16 --profile >/dev/null 2>"$tmp/prof.err"
if grep -qE '^ +network +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+%' "$tmp/prof.err" && grep -q "peak memory" "$tmp/prof.err"; then
  ok "generate --profile prints the phase table with a network row and the peak memory"
else
  bad "generate --profile:"; cat "$tmp/prof.err"
fi
"$BIN" bench --client-bundle "$tmp/st/client" --endpoint "http://127.0.0.1:$PORT_NUM" --worker-pub "$tmp/keys/worker.pub" \
  --runs 2 --max-tokens 8 --json "$tmp/bench.json" >"$tmp/bench.out" 2>"$tmp/bench.err"
if [ $? -eq 0 ] && python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
c = d["config"]
assert c["mode"] == "remote" and c["runs"] == 2 and c["wire_dtype"] == "f16" and c["max_tokens"] == 8, c
assert d["tokens_per_s"] > 0 and d["ttft_ms"] > 0 and d["peak_memory_mib"] > 0, d
assert d["decode_tokens"] == 2 * 7 and len(d["per_run"]) == 2, d
for k in ("embed", "cloak", "serialize", "seal", "network", "open", "uncloak", "lm_head", "sample"):
    for q in ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "share"):
        assert q in d["phases"][k], (k, q)
' "$tmp/bench.json"; then
  ok "bench --runs 2 --max-tokens 8 --json writes the report (tokens/s, TTFT, phases, config)"
else
  bad "bench over HTTP:"; cat "$tmp/bench.err"; cat "$tmp/bench.json" 2>/dev/null | head -40
fi
stop_worker -TERM
"$BIN" bench --client-bundle "$tmp/st/client" --server-bundle "$tmp/st/server" --runs 1 --warmup 0 --max-tokens 4 \
  --json "$tmp/bench2.json" >/dev/null 2>"$tmp/bench2.err" && python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["config"]["mode"] == "split" and d["tokens_per_s"] > 0 and "layers" in d["phases"] and "network" not in d["phases"], d
' "$tmp/bench2.json" && ok "bench in local split mode reports a layers phase instead of the network" \
  || { bad "bench split:"; cat "$tmp/bench2.err"; }

echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
