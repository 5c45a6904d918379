#!/usr/bin/env bash
# Train on a Cloud TPU VM slice or pod: the same command on every worker, jax.distributed
# detects the pod topology itself.
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b tpu_scripts/launch_tpu_pod.sh \
#       --config configs/lm_160m.py --workdir /mnt/shared/runs/lm_160m --config.mesh.fsdp=-1
#
# Env: TPU_NAME, ZONE (required); PROJECT (optional gcloud project); REPO_DIR (where this repo
# is on every worker, default ~/optaxlab); PYTHON (default .venv/bin/python in REPO_DIR).
# First time: copy the repo and install it on every worker, e.g.
#   gcloud compute tpus tpu-vm scp --recurse . "$TPU_NAME":~/optaxlab --zone "$ZONE" --worker=all
#   gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all \
#       --command 'cd ~/optaxlab && python3 -m venv .venv && .venv/bin/pip install -e . "jax[tpu]"'
# The workdir must be visible to every worker (e.g. a GCS FUSE or Filestore mount).
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME (the TPU VM / pod name)}"
: "${ZONE:?set ZONE (e.g. us-central2-b)}"
REPO_DIR=${REPO_DIR:-'~/optaxlab'}
PY=${PYTHON:-.venv/bin/python}
project=()
[[ -n "${PROJECT:-}" ]] && project=(--project "$PROJECT")

args=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" "${project[@]}" --worker=all \
  --command "cd $REPO_DIR && $PY -m optaxlab.train --multihost$args"
