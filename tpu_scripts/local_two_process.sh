#!/usr/bin/env bash
# Two CPU processes on 127.0.0.1 acting as a two-host cluster (jax.distributed over gloo):
# the multi-host code path (global mesh, per-process rows, Orbax multi-process checkpoints,
# the processes agreeing on the step to stop at) on one machine.
#
#   tpu_scripts/local_two_process.sh --config lm_tiny --workdir runs/two_proc \
#       --config.steps=20
#   tpu_scripts/local_two_process.sh --dry-run ...   # print the two commands only
#
# Env: DEVICES_PER_PROCESS (default 1) simulated CPU devices per process; PORT (default random);
# PYTHON (default .venv/bin/python); LOG_DIR (default $TMPDIR or /tmp) for the per-process logs
# (optaxlab_process_<i>.log) and pid files (optaxlab_process_<i>.pid). SIGTERM / SIGINT to this
# script are passed on to both processes. Exit status: process 0's, or process 1's if 0's is 0.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then
  DRY_RUN=1
  shift
fi
PY=${PYTHON:-.venv/bin/python}
PORT=${PORT:-$((20000 + RANDOM % 20000))}
DEVICES=${DEVICES_PER_PROCESS:-1}
LOG_DIR=${LOG_DIR:-${TMPDIR:-/tmp}}
mkdir -p "$LOG_DIR"

pids=()
for id in 0 1; do
  env=(XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES" JAX_PLATFORMS=cpu
       OPTAXLAB_COORDINATOR="127.0.0.1:$PORT" OPTAXLAB_NUM_PROCESSES=2 OPTAXLAB_PROCESS_ID="$id")
  if (( DRY_RUN )); then
    echo "$(printf '%q ' "${env[@]}" "$PY" -m optaxlab.train --multihost "$@")> $LOG_DIR/optaxlab_process_$id.log 2>&1 &"
    continue
  fi
  env "${env[@]}" "$PY" -m optaxlab.train --multihost "$@" \
    >"$LOG_DIR/optaxlab_process_$id.log" 2>&1 &
  pids+=($!)
  echo "$!" > "$LOG_DIR/optaxlab_process_$id.pid"
done
(( DRY_RUN )) && exit 0
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' TERM
trap 'kill -INT "${pids[@]}" 2>/dev/null || true' INT

codes=()
for id in 0 1; do
  code=0
  while true; do  # `wait` returns early when a trapped signal arrives; wait again
    wait "${pids[$id]}" && code=0 || code=$?
    kill -0 "${pids[$id]}" 2>/dev/null || break
  done
  codes+=("$code")
  if [[ "$code" != 0 && "$code" != 130 ]]; then
    echo "process $id exited with $code; last lines of $LOG_DIR/optaxlab_process_$id.log:" >&2
    tail -n 20 "$LOG_DIR/optaxlab_process_$id.log" >&2
  fi
done
echo "2 processes done (exit codes ${codes[*]}); logs: $LOG_DIR/optaxlab_process_{0,1}.log"
status=${codes[0]}
[[ "$status" == 0 ]] && status=${codes[1]}
exit "$status"
