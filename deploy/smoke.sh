#!/usr/bin/env bash
# deploy/smoke.sh — does a built worker start and answer? Runs
# `infemeral-worker --test-input` (RunPod's local test mode) the way the
# image does, on a stories260K server bundle prepared here.
#
# If this fails, an image built from this tree would crash or hang on its
# first job instead of answering it.
#
# usage: deploy/smoke.sh INFEMERAL INFEMERAL_WORKER ASSETS_DIR
# The request is well-formed but sealed for no one (zero payload): the
# worker must load the bundle and its key, parse the request, fail to open
# it, and answer {"error":{"code":"auth",...}} with exit status 1.
set -u
BIN=$1 WORKER=$2 ASSETS=$3
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok - $1"; }
bad() { fail=$((fail + 1)); echo "not ok - $1"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ST="$ASSETS/stories260K"
"$BIN" keygen --out "$tmp/keys" >/dev/null || bad "keygen"
"$BIN" prep --model "$ST/stories260K.bin" --tokenizer "$ST/tok512.bin" --out "$tmp/b" --weights f32 --quiet \
  || bad "prep"
export INFEMERAL_WORKER_KEY_FILE="$tmp/keys/worker.key" INFEMERAL_KV_DIR="$tmp/kv"
unset RUNPOD_WEBHOOK_GET_JOB

# one token of the 64-wide stories260K model in f32: 32-byte KV key + 256 bytes + 16-byte tag
payload=$(head -c 304 /dev/zero | base64 -w0)
epk=$(printf '\x09%.0s' $(seq 1 32) | base64 -w0)
cat >"$tmp/job.json" <<JSON
{"input": {"v":1, "session":"00112233445566778899aabbccddeeff", "step":1, "pos":0, "n":1,
 "dtype":"f32", "shape":[1,64], "zstd":false, "epk":"$epk", "payload":"$payload"}}
JSON
INFEMERAL_BUNDLE="$tmp/b/server" timeout 60 "$WORKER" --test-input "$tmp/job.json" >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ $rc -eq 1 ] && grep -q '"code":"auth"' "$tmp/out"; then
  ok "--test-input: the worker loads the bundle and answers a request it cannot open with an auth error"
else
  bad "--test-input: exit $rc"; cat "$tmp/out" "$tmp/err"
fi

INFEMERAL_BUNDLE="$tmp/nope" timeout 60 "$WORKER" --test-input "$tmp/job.json" >/dev/null 2>"$tmp/err2"
rc=$?
[ $rc -eq 1 ] && grep -q "cannot load the server bundle" "$tmp/err2" \
  && ok "a missing bundle: exit 1 and a message saying so" || { bad "missing bundle: exit $rc"; cat "$tmp/err2"; }

echo "$pass passed, $fail failed, 0 skipped"
[ $fail -eq 0 ]
