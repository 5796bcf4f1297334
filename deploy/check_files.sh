#!/usr/bin/env bash
# deploy/check_files.sh — what CI can check of the image without a Docker
# engine: every file and script the Dockerfile references exists (ARG
# defaults resolved), the scripts are executable and parse, and runpod.toml
# is valid TOML with the keys deploy/README.md relies on.
#
# If this fails, `docker build .` would stop at a missing COPY source or
# script, or runpodctl would refuse runpod.toml.
#
# usage: deploy/check_files.sh [SOURCE_ROOT]
set -u
cd "${1:-$(dirname "$0")/..}"
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok - $1"; }
bad() { fail=$((fail + 1)); echo "not ok - $1"; }

declare -A arg
while read -r _ kv; do
  [[ $kv == *=* ]] && arg[${kv%%=*}]=${kv#*=}
done < <(grep -E '^ARG [A-Z_]+=' Dockerfile)
expand() { local s=$1; for k in "${!arg[@]}"; do s=${s//\$\{$k\}/${arg[$k]}}; done; echo "$s"; }

# COPY sources (not --from=build ones) and ./deploy/ scripts that RUN calls
while read -r line; do
  set -- $line
  shift
  [[ $1 == --from=* ]] && continue
  n=$#
  for ((i = 1; i < n; i++)); do
    src=$(expand "${!i}")
    [ "$src" = . ] && continue
    [ -e "$src" ] && ok "COPY source $src exists" || bad "COPY source $src is missing"
  done
done < <(grep -E '^COPY ' Dockerfile)
for s in $(grep -oE '\./deploy/[A-Za-z0-9_.-]+\.sh' Dockerfile | sort -u) deploy/runtime-deps.sh; do
  [ -x "$s" ] && ok "$s exists and is executable" || bad "$s is missing or not executable"
done
for s in deploy/*.sh; do
  bash -n "$s" && ok "$s parses" || bad "$s has a syntax error"
done
if [ -f .dockerignore ] && grep -qx '\*\*/secret.key' .dockerignore && grep -qx '\*\*/worker.key' .dockerignore \
  && ! grep -qE '^(deploy|\*$)' .dockerignore; then
  ok ".dockerignore keeps keys out of the build context and lets deploy/ in"
else
  bad ".dockerignore is missing, lets secret.key/worker.key in, or keeps deploy/ out"
fi
grep -q '^ENTRYPOINT \["/usr/local/bin/infemeral-worker"\]' Dockerfile && ok "ENTRYPOINT is the worker" \
  || bad "ENTRYPOINT is not /usr/local/bin/infemeral-worker"
grep -qE '^USER [^r0]' Dockerfile && ok "the image runs as a non-root user" || bad "no non-root USER"

# The REST and S3 scripts' DRY_RUN paths: what runs without RunPod. The
# requests must parse and carry runpod.toml's values (the script hard-codes
# them; this keeps the two in step).
tmpd=$(mktemp -d)
trap 'rm -rf "$tmpd"' EXIT
if out=$(DRY_RUN=1 IMAGE=docker.io/you/infemeral-worker:test NETWORK_VOLUME_ID=vol1 RUNPOD_API_KEY= \
    deploy/runpod_create.sh 2>"$tmpd/create.err") && [ "$out" = DRY_RUN_ID ]; then
  ok "runpod_create.sh DRY_RUN=1 prints its requests and sends nothing"
else
  bad "runpod_create.sh DRY_RUN=1 failed"; cat "$tmpd/create.err"
fi
if python3 -c 'import tomllib' 2>/dev/null; then
  python3 - "$tmpd/create.err" <<'PY' && ok "runpod_create.sh's requests are JSON and match runpod.toml" \
    || bad "runpod_create.sh's requests"
import json, sys, tomllib
t = tomllib.load(open("runpod.toml", "rb"))
bodies = {}
for line in open(sys.argv[1]):
    if line.startswith("DRY_RUN: curl -X POST "):
        path = line.split()[4].rsplit("/", 1)[1]
        bodies[path] = json.loads(line[line.index(" -d '") + 5:line.rstrip().rindex("'")])
tp, ep, p, e = bodies["templates"], bodies["endpoints"], t["project"], t["endpoint"]
want = [
    (tp["env"], p["env_vars"], "template env vs [project.env_vars]"),
    (tp["imageName"], "docker.io/you/infemeral-worker:test", "imageName"),
    (tp["isServerless"], True, "isServerless"),
    (tp["volumeMountPath"], p["volume_mount_path"], "volumeMountPath"),
    (tp["containerDiskInGb"], p["container_disk_size_gb"], "containerDiskInGb"),
    (ep["templateId"], "DRY_RUN_ID", "templateId"),
    (ep["networkVolumeId"], "vol1", "networkVolumeId"),
    (ep["gpuTypeIds"], p["gpu_types"], "gpuTypeIds vs gpu_types"),
    (ep["gpuCount"], p["gpu_count"], "gpuCount"),
    (ep["workersMin"], e["workers"]["min"], "workersMin"),
    (ep["workersMax"], e["workers"]["max"], "workersMax"),
    (ep["flashboot"], e["flashboot"], "flashboot"),
    (ep["idleTimeout"], e["idle_timeout_s"], "idleTimeout"),
    (ep["executionTimeoutMs"], e["execution_timeout_ms"], "executionTimeoutMs"),
    (ep["scalerType"], e["scaler"]["type"], "scalerType"),
    (ep["scalerValue"], e["scaler"]["value"], "scalerValue"),
]
bad = [f"{what}: {got!r} != {exp!r}" for got, exp, what in want if got != exp]
if bad: print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
fi
if DRY_RUN=1 IMAGE=x deploy/runpod_create.sh >/dev/null 2>"$tmpd/novol.err"; then
  bad "runpod_create.sh accepted a bundle on the volume without NETWORK_VOLUME_ID"
else
  grep -q NETWORK_VOLUME_ID "$tmpd/novol.err" && ok "runpod_create.sh without a volume says NETWORK_VOLUME_ID" \
    || bad "runpod_create.sh without a volume: $(cat "$tmpd/novol.err")"
fi
mkdir -p "$tmpd/out/server" "$tmpd/out/client"
: >"$tmpd/out/server/model.safetensors"
: >"$tmpd/out/client/secret.key"
out=$(DRY_RUN=1 deploy/upload_bundle.sh "$tmpd/out/server" vol1 EU-RO-1 2>&1)
[ "$out" = "aws s3 sync $tmpd/out/server s3://vol1/infemeral/server --region EU-RO-1 --endpoint-url https://s3api-eu-ro-1.runpod.io" ] \
  && ok "upload_bundle.sh DRY_RUN=1 prints the S3 sync to the volume" || bad "upload_bundle.sh DRY_RUN=1: $out"
for d in "$tmpd/out/client" "$tmpd/out"; do # the client bundle, or out/ with both
  if DRY_RUN=1 deploy/upload_bundle.sh "$d" vol1 EU-RO-1 >/dev/null 2>"$tmpd/up.err"; then
    bad "upload_bundle.sh would upload $d (the client bundle's secret.key)"
  else
    grep -q "CLIENT bundle" "$tmpd/up.err" && ok "upload_bundle.sh refuses ${d#"$tmpd/"}: it holds the client bundle" \
      || bad "upload_bundle.sh refused ${d#"$tmpd/"} for another reason: $(cat "$tmpd/up.err")"
  fi
done

if python3 -c 'import tomllib' 2>/dev/null; then
  python3 - <<'PY' && ok "runpod.toml is valid and complete" || bad "runpod.toml"
import tomllib, sys
t = tomllib.load(open("runpod.toml", "rb"))
need = {"": ["name"], "project": ["base_image", "gpu_types", "gpu_count", "volume_mount_path", "env_vars"],
        "endpoint": ["workers", "flashboot"]}
missing = [f"{s}.{k}" if s else k for s, ks in need.items() for k in ks if k not in (t[s] if s else t)]
env = t["project"].get("env_vars", {})
for k in ("INFEMERAL_BUNDLE", "INFEMERAL_KV_DIR", "INFEMERAL_WORKER_KEY"):
    if k not in env: missing.append("project.env_vars." + k)
if missing:
    print("missing:", ", ".join(missing)); sys.exit(1)
PY
else
  echo "ok - runpod.toml not parsed (python3 has no tomllib) # SKIP"
fi
echo "$pass passed, $fail failed, 0 skipped"
[ $fail -eq 0 ]
