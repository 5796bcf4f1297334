#!/usr/bin/env bash
# deploy/upload_bundle.sh — copies a prepared SERVER bundle
# (infemeral prep --out DIR -> DIR/server) onto a RunPod network volume, as
# infemeral/server/ at the volume's root (the worker sees
# /runpod-volume/infemeral/server), through RunPod's S3-compatible API with
# the AWS CLI.
#
# UNTESTED against RunPod (no access to it from the build machines). It
# follows RunPod's documented S3 API: endpoint https://s3api-<dc>.runpod.io,
# bucket = the network volume id, region = the data center id, keys = an
# S3 API key made in RunPod's console (Settings -> S3 API Keys).
#
# usage: deploy/upload_bundle.sh DIR/server NETWORK_VOLUME_ID DATACENTER_ID
#   e.g. deploy/upload_bundle.sh out/server abc123xyz EU-RO-1
# env: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (the RunPod S3 API key);
#      DRY_RUN=1 prints the command instead.
set -euo pipefail
SRC=${1:?usage: upload_bundle.sh DIR/server NETWORK_VOLUME_ID DATACENTER_ID}
VOL=${2:?network volume id}
DC=${3:?data center id, e.g. EU-RO-1}
# the client bundle holds the rotation secret (secret.key): it must never leave your machine
if [ -e "$SRC/secret.key" ] || [ -e "$SRC/client.safetensors" ] || ls "$SRC" | grep -qi 'client'; then
  echo "upload_bundle: $SRC looks like it holds the CLIENT bundle (its secret.key is the cloak's secret);" \
    "only the server bundle goes to RunPod" >&2
  exit 1
fi
[ -f "$SRC/model.safetensors" ] || { echo "upload_bundle: $SRC/model.safetensors is missing (give the server bundle: infemeral prep --out DIR -> DIR/server)" >&2; exit 1; }
dc=$(echo "$DC" | tr 'A-Z' 'a-z')
cmd=(aws s3 sync "$SRC" "s3://$VOL/infemeral/server" --region "$DC" --endpoint-url "https://s3api-$dc.runpod.io")
if [ "${DRY_RUN:-0}" = 1 ]; then echo "${cmd[*]}"; exit 0; fi
command -v aws >/dev/null || { echo "upload_bundle: needs the AWS CLI (pip install awscli)" >&2; exit 1; }
"${cmd[@]}"
echo "upload_bundle: done; set INFEMERAL_BUNDLE=/runpod-volume/infemeral/server (the default)" >&2
