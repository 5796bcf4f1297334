#!/usr/bin/env bash
# deploy/runpod_create.sh — creates the RunPod serverless template and
# endpoint for the worker through RunPod's REST API (https://rest.runpod.io/v1)
# with curl, and prints the endpoint id for `infemeral generate --runpod ID`.
#
# UNTESTED against RunPod: the machines this project is built on reach only
# package registries, so these calls have never run against the real API.
# They follow RunPod's published OpenAPI description (POST /v1/templates,
# POST /v1/endpoints). Run with DRY_RUN=1 to print the requests instead.
#
# Needs curl and python3. Create the RunPod secret holding the worker key
# first (deploy/README.md, step 4): the template only names it.
#
# Environment:
#   RUNPOD_API_KEY      your RunPod API key, read/write (required unless DRY_RUN=1)
#   IMAGE               the pushed image, e.g. docker.io/you/infemeral-worker:0.1.0 (required)
#   NETWORK_VOLUME_ID   the network volume holding the bundle and the KV store; required
#                       unless the bundle is baked into the image (then set BUNDLE too)
#   BUNDLE              the server bundle inside the worker, default
#                       /runpod-volume/infemeral/server (baked image: /opt/infemeral/server)
#   KV_DIR              the encrypted KV store, default /runpod-volume/infemeral-kv
#                       (/tmp/infemeral-kv without a volume: a conversation then
#                       lives on one worker only)
#   REGISTRY_AUTH_ID    the id of RunPod registry credentials (console -> Settings ->
#                       Container Registry Auth) when the image is private
#   NAME                default infemeral-worker
#   GPU_TYPES           comma-separated RunPod GPU type ids, default
#                       "NVIDIA GeForce RTX 4090,NVIDIA RTX A5000,NVIDIA L4"; they must be
#                       offered in the network volume's data center
#   WORKERS_MIN/MAX     default 0 / 3 (0: no worker, no cost, while idle)
#   FLASHBOOT           default true
#   KEY_SECRET          the RunPod secret holding the worker key, default infemeral_worker_key
#   RUNPOD_REST_URL     default https://rest.runpod.io/v1
#   DRY_RUN=1           print both requests (the key masked) and a fake id; send nothing
set -euo pipefail
API=${RUNPOD_REST_URL:-https://rest.runpod.io/v1}
: "${IMAGE:?set IMAGE to the pushed worker image}"
NAME=${NAME:-infemeral-worker}
GPU_TYPES=${GPU_TYPES:-NVIDIA GeForce RTX 4090,NVIDIA RTX A5000,NVIDIA L4}
WORKERS_MIN=${WORKERS_MIN:-0}
WORKERS_MAX=${WORKERS_MAX:-3}
FLASHBOOT=${FLASHBOOT:-true}
KEY_SECRET=${KEY_SECRET:-infemeral_worker_key}
BUNDLE=${BUNDLE:-/runpod-volume/infemeral/server}
if [ -n "${NETWORK_VOLUME_ID:-}" ]; then KV_DIR=${KV_DIR:-/runpod-volume/infemeral-kv}; else KV_DIR=${KV_DIR:-/tmp/infemeral-kv}; fi
DRY_RUN=${DRY_RUN:-0}
[ "$DRY_RUN" = 1 ] || : "${RUNPOD_API_KEY:?set RUNPOD_API_KEY}"
if [ -z "${NETWORK_VOLUME_ID:-}" ]; then
  for p in "$BUNDLE" "$KV_DIR"; do
    case $p in /runpod-volume/*)
      echo "runpod_create: $p is on the network volume, but NETWORK_VOLUME_ID is not set" \
        "(set it, or BUNDLE=/opt/infemeral/server for a baked image and KV_DIR elsewhere)" >&2
      exit 2 ;;
    esac
  done
fi

# JSON is built by python3 so every value is escaped properly.
template_json=$(NAME="$NAME" IMAGE="$IMAGE" KEY_SECRET="$KEY_SECRET" BUNDLE="$BUNDLE" KV_DIR="$KV_DIR" \
  RA="${REGISTRY_AUTH_ID:-}" python3 - <<'PY'
import json, os
t = {
    "name": os.environ["NAME"],
    "imageName": os.environ["IMAGE"],
    "isServerless": True,
    "containerDiskInGb": 10,
    "volumeInGb": 0,  # serverless: no pod volume (the network volume is the endpoint's)
    "volumeMountPath": "/runpod-volume",
    "env": {
        "INFEMERAL_BUNDLE": os.environ["BUNDLE"],
        "INFEMERAL_KV_DIR": os.environ["KV_DIR"],
        "INFEMERAL_WORKER_KEY": "{{ RUNPOD_SECRET_%s }}" % os.environ["KEY_SECRET"],
        "RUNPOD_CONCURRENCY": "1",
    },
}
if os.environ["RA"]:
    t["containerRegistryAuthId"] = os.environ["RA"]
print(json.dumps(t))
PY
)

call() { # METHOD PATH BODY -> prints the reply; fails on HTTP >= 400
  if [ "$DRY_RUN" = 1 ]; then
    echo "DRY_RUN: curl -X $1 $API$2 -H 'Authorization: Bearer ***' -d '$3'" >&2
    echo '{"id":"DRY_RUN_ID"}'
    return 0
  fi
  local out code
  out=$(mktemp)
  code=$(curl -sS -o "$out" -w '%{http_code}' -X "$1" "$API$2" \
    -H "Authorization: Bearer $RUNPOD_API_KEY" -H 'Content-Type: application/json' --data "$3")
  if [ "$code" -ge 400 ]; then
    echo "runpod_create: $1 $2 answered HTTP $code: $(cat "$out")" >&2
    rm -f "$out"
    return 1
  fi
  cat "$out"
  rm -f "$out"
}
json_id() { python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }

echo "runpod_create: creating template $NAME ($IMAGE)" >&2
template_id=$(call POST /templates "$template_json" | json_id)
echo "runpod_create: template $template_id" >&2

endpoint_json=$(NAME="$NAME" TID="$template_id" GPUS="$GPU_TYPES" WMIN="$WORKERS_MIN" WMAX="$WORKERS_MAX" \
  FB="$FLASHBOOT" NV="${NETWORK_VOLUME_ID:-}" python3 - <<'PY'
import json, os
e = {
    "name": os.environ["NAME"],
    "templateId": os.environ["TID"],
    "gpuTypeIds": [g.strip() for g in os.environ["GPUS"].split(",") if g.strip()],
    "gpuCount": 1,
    "workersMin": int(os.environ["WMIN"]),
    "workersMax": int(os.environ["WMAX"]),
    "idleTimeout": 5,
    "executionTimeoutMs": 600000,
    "scalerType": "QUEUE_DELAY",
    "scalerValue": 4,
    "flashboot": os.environ["FB"] == "true",
}
if os.environ["NV"]:
    e["networkVolumeId"] = os.environ["NV"]
print(json.dumps(e))
PY
)
echo "runpod_create: creating endpoint $NAME" >&2
endpoint_id=$(call POST /endpoints "$endpoint_json" | json_id)
echo "runpod_create: endpoint $endpoint_id" >&2
echo "$endpoint_id"
