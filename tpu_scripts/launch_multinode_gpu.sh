#!/usr/bin/env bash
# Multi-node GPU training: run this on every node, one process per node using all its GPUs.
#
#   # node 0 (coordinator) and node 1 of a 2-node job:
#   COORDINATOR=node0:12345 NUM_NODES=2 NODE_RANK=0 tpu_scripts/launch_multinode_gpu.sh \
#       --config configs/lm_160m.py --workdir /shared/runs/lm_160m --config.mesh.fsdp=-1
#   COORDINATOR=node0:12345 NUM_NODES=2 NODE_RANK=1 tpu_scripts/launch_multinode_gpu.sh ...
#
# Under SLURM (srun --ntasks-per-node=1 ...) leave COORDINATOR unset: jax.distributed detects
# the cluster itself. The workdir must be a folder every node sees (NFS, Lustre, a GCS FUSE
# mount): Orbax writes each process's shards into the same checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}

if [[ -z "${COORDINATOR:-}" ]]; then
  if [[ -n "${SLURM_JOB_ID:-}" ]]; then
    exec "$PY" -m optaxlab.train --multihost "$@"
  fi
  echo "set COORDINATOR=host:port (node 0), NUM_NODES and NODE_RANK, or run under SLURM" >&2
  exit 2
fi
: "${NUM_NODES:?set NUM_NODES (number of processes, one per node)}"
: "${NODE_RANK:?set NODE_RANK (0 .. NUM_NODES-1; 0 is the coordinator)}"
export OPTAXLAB_COORDINATOR="$COORDINATOR" OPTAXLAB_NUM_PROCESSES="$NUM_NODES"
export OPTAXLAB_PROCESS_ID="$NODE_RANK"
exec "$PY" -m optaxlab.train --multihost "$@"
