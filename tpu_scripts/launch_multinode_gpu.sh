#!/usr/bin/env bash
# Multi-node GPU training without SLURM (see slurm_gpu.sbatch for SLURM): run this on every
# node, one process per node using all its GPUs.
#
#   # node 0 (coordinator) and node 1 of a 2-node job:
#   COORDINATOR=node0:12345 NUM_NODES=2 NODE_RANK=0 tpu_scripts/launch_multinode_gpu.sh \
#       --config lm_160m --workdir /shared/runs/lm_160m --config.mesh.fsdp=-1
#   COORDINATOR=node0:12345 NUM_NODES=2 NODE_RANK=1 tpu_scripts/launch_multinode_gpu.sh ...
#   tpu_scripts/launch_multinode_gpu.sh --dry-run ...   # print the command only
#
# The workdir must be a folder every node sees (NFS, Lustre, a bucket): Orbax writes each
# process's shards into the same checkpoint. Stop a run with SIGTERM on every node (it
# checkpoints and exits 0); the same command resumes it.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then
  DRY_RUN=1
  shift
fi
PY=${PYTHON:-.venv/bin/python}
: "${COORDINATOR:?set COORDINATOR=host:port (node 0), NUM_NODES and NODE_RANK}"
: "${NUM_NODES:?set NUM_NODES (number of processes, one per node)}"
: "${NODE_RANK:?set NODE_RANK (0 .. NUM_NODES-1; 0 is the coordinator)}"
export OPTAXLAB_COORDINATOR="$COORDINATOR" OPTAXLAB_NUM_PROCESSES="$NUM_NODES"
export OPTAXLAB_PROCESS_ID="$NODE_RANK"
cmd=("$PY" -m optaxlab.train --multihost "$@")
if (( DRY_RUN )); then
  echo "OPTAXLAB_COORDINATOR=$COORDINATOR OPTAXLAB_NUM_PROCESSES=$NUM_NODES" \
    "OPTAXLAB_PROCESS_ID=$NODE_RANK $(printf '%q ' "${cmd[@]}")"
  exit 0
fi
exec "${cmd[@]}"
