#!/usr/bin/env bash
# Two CPU processes on 127.0.0.1 acting as a two-host cluster (jax.distributed over gloo):
# the multi-host code path (global mesh, per-process rows, Orbax multi-process checkpoints)
# on one machine.
#
#   tpu_scripts/local_two_process.sh --config configs/lm_tiny.py --workdir runs/two_proc \
#       --config.steps=20
#
# Env: DEVICES_PER_PROCESS (default 1) simulated CPU devices per process; PORT (default random);
# PYTHON (default .venv/bin/python); LOG_DIR (default $TMPDIR or /tmp) for the per-process logs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PORT=${PORT:-$((20000 + RANDOM % 20000))}
DEVICES=${DEVICES_PER_PROCESS:-1}
LOG_DIR=${LOG_DIR:-${TMPDIR:-/tmp}}
mkdir -p "$LOG_DIR"

pids=()
for id in 0 1; do
  XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES" JAX_PLATFORMS=cpu \
  OPTAXLAB_COORDINATOR="127.0.0.1:$PORT" OPTAXLAB_NUM_PROCESSES=2 OPTAXLAB_PROCESS_ID=$id \
    "$PY" -m optaxlab.train --multihost "$@" >"$LOG_DIR/optaxlab_process_$id.log" 2>&1 &
  pids+=($!)
done

status=0
for id in 0 1; do
  if ! wait "${pids[$id]}"; then
    status=1
    echo "process $id failed; last lines of $LOG_DIR/optaxlab_process_$id.log:" >&2
    tail -n 20 "$LOG_DIR/optaxlab_process_$id.log" >&2
  fi
done
[[ $status == 0 ]] && echo "2 processes done; logs: $LOG_DIR/optaxlab_process_{0,1}.log"
exit $status
