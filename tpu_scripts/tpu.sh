#!/usr/bin/env bash
# Cloud TPU VMs and pod slices for optaxlab: create, install, sync, launch, logs, relaunch, delete.
#
#   tpu_scripts/tpu.sh [--dry-run] COMMAND [TRAINER ARGS...]
#
#   create    create the TPU VM / pod slice (SPOT=1: a spot slice, which can be preempted)
#   install   on every worker: a Python venv with optaxlab (this checkout) and jax[tpu]
#   sync      copy this checkout (the files git knows) to every worker
#   launch    start `python -m optaxlab.train --multihost TRAINER ARGS` on every worker, in the
#             background; logs in ~/optaxlab_logs/worker_<i>.log on each worker
#   logs      follow worker 0's log (WORKER=i for another one)
#   status    the TPU's state (READY, PREEMPTED, ...) and the trainer processes on each worker
#   relaunch  after a preemption: if the TPU is not READY, delete it, create it again, install
#             and sync, and remove the dead run's WORKDIR/.lock; then launch TRAINER ARGS (the
#             same command as before: the run resumes from its last checkpoint). If the TPU is
#             READY and worker 0 still trains, it does nothing (safe to run from a cron job).
#   stop      SIGTERM to the trainers (they finish the step, checkpoint and exit 0)
#   delete    delete the TPU
#
# --dry-run prints every command instead of running it (nothing is contacted).
#
# Environment: TPU_NAME and ZONE (required); ACCELERATOR (e.g. v4-8, v4-32, v5litepod-8,
# v5litepod-16; needed by create and to know the number of workers); WORKERS (the number of
# workers, if ACCELERATOR does not say it); RUNTIME (TPU software version, default
# tpu-ubuntu2204-base); SPOT=1; PROJECT; REPO_DIR (checkout on the workers, default
# optaxlab under the login's home); JAX_SPEC (default "jax[tpu]").
#
# Example (a spot v4-32 = 4 workers, the workdir in a bucket):
#   export TPU_NAME=my-v4 ZONE=us-central2-b ACCELERATOR=v4-32 SPOT=1
#   tpu_scripts/tpu.sh create && tpu_scripts/tpu.sh sync && tpu_scripts/tpu.sh install
#   tpu_scripts/tpu.sh launch --config lm_160m --workdir gs://my-bucket/runs/lm_160m \
#       --config.mesh.fsdp=-1
#   tpu_scripts/tpu.sh relaunch --config lm_160m --workdir gs://my-bucket/runs/lm_160m \
#       --config.mesh.fsdp=-1          # after a preemption: the same arguments
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then
  DRY_RUN=1
  shift
fi
COMMAND=${1:-}
[[ -n "$COMMAND" ]] && shift
if [[ -z "$COMMAND" || "$COMMAND" == "-h" || "$COMMAND" == "--help" ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit 0
fi
: "${TPU_NAME:?set TPU_NAME (the TPU VM / pod slice name)}"
: "${ZONE:?set ZONE (e.g. us-central2-b)}"
RUNTIME=${RUNTIME:-tpu-ubuntu2204-base}
REPO_DIR=${REPO_DIR:-optaxlab}  # relative paths are under the worker login's home
JAX_SPEC=${JAX_SPEC:-jax[tpu]}
GCLOUD=(gcloud compute tpus tpu-vm)
SCOPE=(--zone "$ZONE")
[[ -n "${PROJECT:-}" ]] && SCOPE+=(--project "$PROJECT")

# Number of workers (hosts) of a slice: v2/v3/v4/v5p count TensorCores, 8 per host; v5e/v6e
# count chips, one host up to 8 chips, 4 chips per host beyond.
workers() {
  if [[ -n "${WORKERS:-}" ]]; then echo "$WORKERS"; return; fi
  local acc=${ACCELERATOR:?set ACCELERATOR (e.g. v4-32) or WORKERS (the number of workers)}
  local n=${acc##*-}
  case "$acc" in
    v2-*|v3-*|v4-*|v5p-*) echo $(( n > 8 ? n / 8 : 1 )) ;;
    v5litepod-*|v6e-*) echo $(( n > 8 ? n / 4 : 1 )) ;;
    *) echo "unknown ACCELERATOR=$acc; set WORKERS" >&2; return 2 ;;
  esac
}

quote() {  # an argument as a shell reads it back (plain words as they are)
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then printf '%s' "$1"; else printf '%s' "${1@Q}"; fi
}

run() {  # print (dry run) or run one command
  if (( DRY_RUN )); then
    local out="" arg
    for arg in "$@"; do out+="${out:+ }$(quote "$arg")"; done
    echo "$out"
  else
    "$@"
  fi
}

on_worker() {  # run a shell command on worker $1
  run "${GCLOUD[@]}" ssh "$TPU_NAME" "${SCOPE[@]}" --worker="$1" --command "${2//@WORKER@/$1}"
}

on_workers() {  # run a shell command on every worker, in parallel; fail if any fails
  local n pids=() i status=0
  n=$(workers)
  for (( i = 0; i < n; i++ )); do
    if (( DRY_RUN )); then
      on_worker "$i" "$1"
    else
      on_worker "$i" "$1" &
      pids+=("$!")
    fi
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { echo "worker $i failed" >&2; status=1; }
  done
  return "$status"
}

LOGS="\$HOME/optaxlab_logs"  # on the workers: worker_<i>.log, worker_<i>.pid

trainer_command() {  # what each worker runs, in the background
  local args=""
  (( $# )) && args=$(printf ' %q' "$@")
  echo "cd $REPO_DIR && mkdir -p $LOGS && { nohup .venv/bin/python -m optaxlab.train" \
    "--multihost$args > $LOGS/worker_@WORKER@.log 2>&1 < /dev/null &" \
    "echo \$! > $LOGS/worker_@WORKER@.pid; }"
}

workdir_of() {  # the --workdir value in the trainer arguments
  local prev=""
  for arg in "$@"; do
    case "$arg" in --workdir=*) echo "${arg#--workdir=}"; return ;; esac
    [[ "$prev" == "--workdir" ]] && { echo "$arg"; return; }
    prev=$arg
  done
}

create() {
  local acc=${ACCELERATOR:?set ACCELERATOR (e.g. v4-32)}
  local spot=()
  [[ "${SPOT:-0}" == 1 ]] && spot=(--spot)
  run "${GCLOUD[@]}" create "$TPU_NAME" "${SCOPE[@]}" --accelerator-type "$acc" \
    --version "$RUNTIME" "${spot[@]}"
}

install() {
  on_workers "cd $REPO_DIR && python3 -m venv .venv && .venv/bin/pip install -q --upgrade pip \
&& .venv/bin/pip install -q -e . '$JAX_SPEC' gcsfs"
}

sync() {
  local tarball=/tmp/optaxlab-src-$TPU_NAME.tgz
  if (( DRY_RUN )); then
    echo "git ls-files -z | tar --null -czf $tarball -T -"
  else
    git ls-files -z | tar --null -czf "$tarball" -T -
  fi
  run "${GCLOUD[@]}" scp "$tarball" "$TPU_NAME:/tmp/optaxlab-src.tgz" "${SCOPE[@]}" --worker=all
  on_workers "mkdir -p $REPO_DIR && tar -xzf /tmp/optaxlab-src.tgz -C $REPO_DIR"
}

launch() {
  [[ -n "$(workdir_of "$@")" ]] || { echo "launch needs the trainer's --workdir" >&2; return 2; }
  on_workers "$(trainer_command "$@")"
  (( DRY_RUN )) || echo "launched on $(workers) worker(s); follow with: tpu_scripts/tpu.sh logs"
}

state() {
  "${GCLOUD[@]}" describe "$TPU_NAME" "${SCOPE[@]}" --format='value(state)' 2>/dev/null || true
}

relaunch() {
  local workdir current=READY
  workdir=$(workdir_of "$@")
  [[ -n "$workdir" ]] || { echo "relaunch needs the trainer's --workdir" >&2; return 2; }
  if (( DRY_RUN )); then
    run "${GCLOUD[@]}" describe "$TPU_NAME" "${SCOPE[@]}" --format='value(state)'
    echo "# if that state is not READY (e.g. PREEMPTED), then:"
    current=PREEMPTED
  else
    current=$(state)
  fi
  if [[ "$current" == READY ]] && (( ! DRY_RUN )) && on_worker 0 \
      "kill -0 \$(cat $LOGS/worker_0.pid 2>/dev/null) 2>/dev/null" >/dev/null 2>&1; then
    echo "TPU $TPU_NAME is READY and worker 0 is training: nothing to do"
    return 0
  fi
  if [[ "$current" != READY ]]; then
    (( DRY_RUN )) || echo "TPU $TPU_NAME is ${current:-gone}: creating it again"
    [[ -n "$current" ]] && run "${GCLOUD[@]}" delete "$TPU_NAME" "${SCOPE[@]}" --quiet
    create
    sync
    install
    # The old processes died with the old VMs: their lock (if a hard kill left one) is stale.
    on_worker 0 "$REPO_DIR/.venv/bin/python -c \"from etils import epath; \
p = epath.Path('$workdir') / '.lock'; p.exists() and p.unlink()\""
  fi
  launch "$@"
}

case "$COMMAND" in
  create) create ;;
  install) install ;;
  sync) sync ;;
  launch) launch "$@" ;;
  logs) on_worker "${WORKER:-0}" "tail -n 100 -f $LOGS/worker_@WORKER@.log" ;;
  status)
    run "${GCLOUD[@]}" describe "$TPU_NAME" "${SCOPE[@]}" --format='value(state)'
    on_workers "kill -0 \$(cat $LOGS/worker_@WORKER@.pid 2>/dev/null) 2>/dev/null \
&& echo 'worker @WORKER@: training' || echo 'worker @WORKER@: no trainer running'" ;;
  relaunch) relaunch "$@" ;;
  stop) on_workers "kill -TERM \$(cat $LOGS/worker_@WORKER@.pid)" ;;
  delete) run "${GCLOUD[@]}" delete "$TPU_NAME" "${SCOPE[@]}" --quiet ;;
  *) echo "unknown command '$COMMAND'; valid: create install sync launch logs status relaunch stop delete" >&2
     exit 2 ;;
esac
