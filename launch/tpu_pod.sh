#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: compile the training step for the slice's
# topology here first (python -m memorizing_jax.compile: does it fit?), create the
# slice (directly, or through a queued resource), copy this checkout to every worker
# and install it, run the same training command on all workers (jax.distributed finds
# its peers by itself on a TPU VM), follow worker 0's log, then delete the slice. When
# training fails because the slice was preempted, delete it, create it again and
# resume from the workdir's last checkpoint (up to --max_restarts times). --dry-run
# prints the commands instead of running them.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: launch/tpu_pod.sh [options] --name NAME --zone ZONE --accelerator TYPE \
         --workdir gs://BUCKET/PATH -- [memorizing_jax.main flags: --gin_file=... ...]

Compiles the training step for the slice's TPU topology on this machine and stops if
it does not fit the chips' memory (needs libtpu here: pip install -e '.[tpu]'; no TPU),
then creates a TPU VM slice, installs this checkout on all its workers, trains on all
of them with the given gin files (checkpoints and TensorBoard events go to the gs://
workdir, which every worker must reach), shows worker 0's log, and deletes the slice.
When training fails and the slice turns out preempted, the slice is deleted, created
again, set up, and training resumes from the last checkpoint (see --max_restarts).

required:
  --name NAME             name of the TPU VM
  --zone ZONE             e.g. us-central2-b (v4), us-west4-a (v5e)
  --accelerator TYPE      slice type, e.g. v4-32, v5litepod-16, v5p-8, v6e-8
  --workdir gs://...      the run's workdir in a Cloud Storage bucket

options:
  --project PROJECT       gcloud project (default: gcloud's configured one)
  --version VERSION       TPU VM software (runtime) version (default: by generation,
                          Google's versions for JAX: v2, v3, v4 tpu-ubuntu2204-base;
                          v5litepod (v5e) v2-alpha-tpuv5-lite; v5p v2-alpha-tpuv5;
                          v6e v2-alpha-tpuv6e)
  --spot                  create a Spot slice (cheaper, and preemptible)
  --queued                request the slice through a queued resource (NAME-qr, Google's
                          recommended way to get capacity), wait until it is ACTIVE,
                          and delete it (with the slice) at the end
  --queue_timeout S       seconds to wait for the queued resource (default 21600)
  --poll_interval S       seconds between checks of its state (default 30)
  --max_restarts N        when training fails and the slice was preempted: delete it,
                          remove the dead run's workdir lock, create and set up the
                          slice again and rerun training (which resumes from the last
                          checkpoint), up to N times (default 3; 0: never)
  --steps LIST            comma-separated subset of compile,create,setup,train,delete
                          (default: all five, in that order; leave out compile to
                          skip the check)
  --topology TOPOLOGY     what to compile for (default: from --accelerator, e.g.
                          v4-32 -> v4:2x2x4, v5litepod-16 -> v5e:4x4)
  --keep                  do not delete the slice at the end (same as leaving out
                          delete from --steps)
  --env NAME=VALUE        set an environment variable for training on every worker
                          (repeatable), e.g. --env MEMORIZING_JAX_ARXIV_DIR=/data/arxiv
  --python PY             python on the workers that installs uv (default: python3);
                          uv then makes a Python 3.12 virtualenv for the package
  --dry-run               print the gcloud commands, run nothing (what a restart
                          after a preemption would run goes to stderr)
  -h, --help              this message

example (the paper's 200M model with an 8K memory on arXiv, on a v4-32):
  launch/tpu_pod.sh --name mt-arxiv --zone us-central2-b --accelerator v4-32 \
    --workdir gs://my-bucket/runs/arxiv_512_xl_mem8k -- \
    --gin_file=gin/experiments/table4_512_xl_mem8k.gin --gin_file=gin/data/arxiv.gin
EOF
}

die() {
  echo "launch/tpu_pod.sh: error: $*" >&2
  echo "run launch/tpu_pod.sh --help for usage" >&2
  exit 2
}

# A failure on the cloud's side (not a usage error): says what happened, exits 1.
fail() {
  echo "launch/tpu_pod.sh: error: $*" >&2
  exit 1
}

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
name="" zone="" accelerator="" workdir="" project="" version=""
spot=0 dry_run=0 steps="compile,create,setup,train,delete" keep=0 python=python3 topology=""
queued=0 queue_timeout=21600 poll_interval=30 max_restarts=3
train_env=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --name) need_value "$@"; name="$2"; shift 2 ;;
    --name=*) name="${1#*=}"; shift ;;
    --zone) need_value "$@"; zone="$2"; shift 2 ;;
    --zone=*) zone="${1#*=}"; shift ;;
    --accelerator) need_value "$@"; accelerator="$2"; shift 2 ;;
    --accelerator=*) accelerator="${1#*=}"; shift ;;
    --workdir) need_value "$@"; workdir="$2"; shift 2 ;;
    --workdir=*) workdir="${1#*=}"; shift ;;
    --project) need_value "$@"; project="$2"; shift 2 ;;
    --project=*) project="${1#*=}"; shift ;;
    --version) need_value "$@"; version="$2"; shift 2 ;;
    --version=*) version="${1#*=}"; shift ;;
    --steps) need_value "$@"; steps="$2"; shift 2 ;;
    --steps=*) steps="${1#*=}"; shift ;;
    --topology) need_value "$@"; topology="$2"; shift 2 ;;
    --topology=*) topology="${1#*=}"; shift ;;
    --python) need_value "$@"; python="$2"; shift 2 ;;
    --python=*) python="${1#*=}"; shift ;;
    --env) need_value "$@"; train_env+=("$2"); shift 2 ;;
    --env=*) train_env+=("${1#*=}"); shift ;;
    --max_restarts|--max-restarts) need_value "$@"; max_restarts="$2"; shift 2 ;;
    --max_restarts=*|--max-restarts=*) max_restarts="${1#*=}"; shift ;;
    --queue_timeout|--queue-timeout) need_value "$@"; queue_timeout="$2"; shift 2 ;;
    --queue_timeout=*|--queue-timeout=*) queue_timeout="${1#*=}"; shift ;;
    --poll_interval|--poll-interval) need_value "$@"; poll_interval="$2"; shift 2 ;;
    --poll_interval=*|--poll-interval=*) poll_interval="${1#*=}"; shift ;;
    --spot) spot=1; shift ;;
    --queued) queued=1; shift ;;
    --keep) keep=1; shift ;;
    --dry-run|--dry_run) dry_run=1; shift ;;
    --) shift; break ;;
    *) die "unknown option '$1' (training flags go after --)" ;;
  esac
done
train_flags=("$@")

[[ -n "$name" ]] || die "--name is required"
[[ "$name" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] ||
  die "--name must be lower-case letters, digits and dashes, starting with a letter; got '$name'"
[[ -n "$zone" ]] || die "--zone is required (e.g. us-central2-b)"
[[ -n "$accelerator" ]] || die "--accelerator is required (e.g. v4-32)"
[[ "$accelerator" =~ ^v[0-9]+[a-z]*(pod)?-[0-9]+$ ]] ||
  die "--accelerator must look like v4-32 or v5litepod-16, got '$accelerator'"
[[ -n "$workdir" ]] || die "--workdir is required (gs://BUCKET/PATH)"
[[ "$workdir" == gs://?* ]] ||
  die "--workdir must be a gs:// path that every worker can write, got '$workdir'"
[[ "$max_restarts" =~ ^[0-9]+$ ]] ||
  die "--max_restarts must be a whole number >= 0 (0: never restart), got '$max_restarts'"
[[ "$queue_timeout" =~ ^[0-9]+$ ]] ||
  die "--queue_timeout must be a whole number of seconds, got '$queue_timeout'"
[[ "$poll_interval" =~ ^[1-9][0-9]*$ ]] ||
  die "--poll_interval must be a positive whole number of seconds, got '$poll_interval'"
has_gin=0
for flag in "${train_flags[@]+"${train_flags[@]}"}"; do
  case "$flag" in
    --gin_file=*) has_gin=1 ;;
    --workdir*) die "give the workdir with --workdir before --, not as a training flag" ;;
    --coordinator_address*|--num_processes*|--process_id*)
      die "$flag is not needed on a TPU VM: jax.distributed reads the slice's settings" ;;
  esac
done
[[ "$has_gin" == 1 ]] || die "no --gin_file among the training flags after -- (e.g. -- --gin_file=gin/train.gin ...)"

for assignment in "${train_env[@]+"${train_env[@]}"}"; do
  [[ "$assignment" =~ ^[A-Za-z_][A-Za-z0-9_]*=.*$ ]] ||
    die "--env must be NAME=VALUE, got '$assignment'"
done

run_compile=0 run_create=0 run_setup=0 run_train=0 run_delete=0
IFS=',' read -r -a step_list <<<"$steps"
for step in "${step_list[@]}"; do
  case "$step" in
    compile) run_compile=1 ;; create) run_create=1 ;; setup) run_setup=1 ;;
    train) run_train=1 ;; delete) run_delete=1 ;;
    *) die "--steps: unknown step '$step' (choose from compile,create,setup,train,delete)" ;;
  esac
done

# The TPU VM software (runtime) version of a slice type's generation: Google's table
# of versions for JAX and PyTorch, https://cloud.google.com/tpu/docs/runtimes
# ("v4 and older" run tpu-ubuntu2204-base; v5e's slice types are v5litepod-N).
runtime_version_of() {
  case "${1%%-*}" in
    v2|v3|v4) echo tpu-ubuntu2204-base ;;
    v5litepod|v5e) echo v2-alpha-tpuv5-lite ;;
    v5p) echo v2-alpha-tpuv5 ;;
    v6e) echo v2-alpha-tpuv6e ;;
    *) return 1 ;;
  esac
}
# Needed to create the slice, and to create it again after a preemption.
if [[ -z "$version" ]] && (( run_create || ((run_setup || run_train) && max_restarts > 0) )); then
  version="$(runtime_version_of "$accelerator")" ||
    die "unknown TPU generation '${accelerator%%-*}' in --accelerator $accelerator (known: v2, v3, v4, v5litepod, v5p, v6e): give its software version with --version (see https://cloud.google.com/tpu/docs/runtimes)"
fi

# The TPU topology of a slice type: v4/v5p count TensorCores (2 per chip) in a 3-D
# torus, v5e/v6e ("litepod") count chips in a 2-D grid.
topology_of() {
  local generation="${1%%-*}" count="${1##*-}" chips grid=""
  case "$generation" in
    v4|v5p) chips=$(( count / 2 ))
      case "$chips" in
        4) grid=2x2x1 ;; 8) grid=2x2x2 ;; 16) grid=2x2x4 ;; 32) grid=2x4x4 ;;
        64) grid=4x4x4 ;; 128) grid=4x4x8 ;; 256) grid=4x8x8 ;; 512) grid=8x8x8 ;;
      esac ;;
    v5litepod|v5e|v6e)
      [[ "$generation" == v6e ]] && generation=v6e || generation=v5e
      case "$count" in
        1) grid=1x1 ;; 4) grid=2x2 ;; 8) grid=2x4 ;; 16) grid=4x4 ;; 32) grid=4x8 ;;
        64) grid=8x8 ;; 128) grid=8x16 ;; 256) grid=16x16 ;;
      esac ;;
  esac
  [[ -n "$grid" ]] || return 1
  echo "$generation:$grid"
}
if (( run_compile )) && [[ -z "$topology" ]]; then
  topology="$(topology_of "$accelerator")" ||
    die "no TPU topology known for --accelerator $accelerator: give one with --topology (e.g. v4:2x2x4) or leave compile out of --steps"
fi
local_python="$repo/.venv/bin/python"
[[ -x "$local_python" ]] || local_python="${PYTHON:-python3}"
(( keep )) && run_delete=0

if (( ! dry_run && (run_create || run_setup || run_train || run_delete) )); then
  command -v gcloud >/dev/null 2>&1 ||
    die "gcloud not found: install the Google Cloud CLI (https://cloud.google.com/sdk) and run 'gcloud auth login'"
fi

common=(--zone="$zone")
[[ -n "$project" ]] && common+=(--project="$project")
queued_resource="${name}-qr"
archive="${TMPDIR:-/tmp}/memorizing_jax_${name}.tar.gz"
remote_dir='~/memorizing_jax'
# The dead run's lock (memorizing_jax/train/workdir_lock.py) that a restart removes.
workdir_lock="${workdir%/}/workdir.lock"

# One word for a POSIX shell: as it is when safe, else in single quotes.
quote() {
  if [[ "$1" =~ ^[-A-Za-z0-9_.,:/=@+%]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# A command as one line, quoted, ready to paste.
command_line() {
  local line="" word
  for word in "$@"; do line+="$(quote "$word") "; done
  printf '%s' "${line% }"
}

# Prints a command; runs it unless --dry-run. While `listing` (the dry run's plan of a
# restart) it only lists the command, indented, on stderr.
listing=0
run() {
  if (( listing )); then echo "    $(command_line "$@")" >&2; return 0; fi
  command_line "$@"; echo
  (( dry_run )) || "$@"
}

# Prints a describe command and runs it (also under --dry-run: only while restarting
# or waiting, which a dry run never does); `state` gets its output, GONE if it fails.
describe() {
  command_line "$@"; echo
  state="$("$@")" || state=GONE
}

# The remote training command, every flag quoted for the workers' shell.
printf -v flags_quoted ' %q' --workdir="$workdir" "${train_flags[@]}"
env_quoted=""
if [[ ${#train_env[@]} -gt 0 ]]; then printf -v env_quoted 'env%s ' "$(printf ' %q' "${train_env[@]}")"; fi
train_remote="cd $remote_dir && (trap '' HUP; ${env_quoted}.venv/bin/python -m memorizing_jax.main${flags_quoted}; echo \$? > ~/train.rc) > ~/train.log 2>&1 < /dev/null & echo \$! > ~/train.pid"

queued_describe=(gcloud compute tpus queued-resources describe "$queued_resource" "${common[@]}"
                 --format='value(state.state)')
node_describe=(gcloud compute tpus tpu-vm describe "$name" "${common[@]}" --format='value(state)')

# Waits until the queued resource is ACTIVE (its node is then up); FAILED, SUSPENDED
# or --queue_timeout seconds end the script (its exit handler deletes the request).
wait_until_active() {
  local every="every $poll_interval s until $queued_resource is ACTIVE, for at most $queue_timeout s"
  if (( listing )); then
    echo "    $(command_line "${queued_describe[@]}")" >&2
    echo "    # $every" >&2
    return 0
  fi
  if (( dry_run )); then
    command_line "${queued_describe[@]}"; echo
    echo "launch/tpu_pod.sh: the line above runs $every" >&2
    return 0
  fi
  local started=$SECONDS last="" state
  command_line "${queued_describe[@]}"; echo
  while :; do
    state="$("${queued_describe[@]}")" || state=""
    if [[ "$state" != "$last" ]]; then
      echo "launch/tpu_pod.sh: queued resource $queued_resource is ${state:-not found yet} after $(( SECONDS - started )) s" >&2
      last="$state"
    fi
    case "$state" in
      ACTIVE) return 0 ;;
      FAILED) fail "queued resource $queued_resource FAILED (the request is wrong, or no capacity came within its time): see $(command_line gcloud compute tpus queued-resources describe "$queued_resource" "${common[@]}")" ;;
      SUSPENDING|SUSPENDED) fail "queued resource $queued_resource is $state: its slice was taken back before training started; run the same command again" ;;
    esac
    (( SECONDS - started < queue_timeout )) ||
      fail "queued resource $queued_resource is not ACTIVE after $queue_timeout s (state: ${state:-unknown}); raise --queue_timeout, try another zone, or leave out --spot"
    sleep "$poll_interval"
  done
}

create_slice() {
  local create
  if (( queued )); then
    create=(gcloud compute tpus queued-resources create "$queued_resource" --node-id="$name"
            "${common[@]}" --accelerator-type="$accelerator" --runtime-version="$version")
  else
    create=(gcloud compute tpus tpu-vm create "$name" "${common[@]}"
            --accelerator-type="$accelerator" --version="$version")
  fi
  if (( spot )); then create+=(--spot); fi
  run "${create[@]}" || return
  if (( queued )); then wait_until_active; fi
}

delete_slice() {
  if (( queued )); then
    # --force deletes the request's node first.
    run gcloud compute tpus queued-resources delete "$queued_resource" "${common[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$name" "${common[@]}" --quiet
  fi
}

setup_slice() {
  run git -C "$repo" archive --format=tar.gz --output="$archive" HEAD || return
  run gcloud compute tpus tpu-vm scp "$archive" "$name:memorizing_jax.tar.gz" "${common[@]}" --worker=all || return
  # The package needs Python >= 3.11; uv fetches one when the image's is older.
  run gcloud compute tpus tpu-vm ssh "$name" "${common[@]}" --worker=all --command="rm -rf $remote_dir && mkdir -p $remote_dir && tar -xzf ~/memorizing_jax.tar.gz -C $remote_dir && cd $remote_dir && $python -m pip install --quiet --user uv && ~/.local/bin/uv venv --quiet --python 3.12 .venv && ~/.local/bin/uv pip install --quiet --python .venv/bin/python -e . 'jax[tpu]'"
}

train_on_slice() {
  run gcloud compute tpus tpu-vm ssh "$name" "${common[@]}" --worker=all --command="$train_remote" || return
  # Worker 0 logs the metrics; follow it until its training process ends.
  run gcloud compute tpus tpu-vm ssh "$name" "${common[@]}" --worker=0 --command="tail -n +1 -f ~/train.log --pid=\$(cat ~/train.pid)" || return
  run gcloud compute tpus tpu-vm ssh "$name" "${common[@]}" --worker=all --command="test \"\$(cat ~/train.rc)\" = 0 || { echo \"training failed on \$(hostname) (exit \$(cat ~/train.rc)); last lines of ~/train.log:\"; tail -n 30 ~/train.log; exit 1; }"
}

# After a failure: was the slice taken back? A Spot or preemptible node turns
# PREEMPTED; a queued resource turns SUSPENDING/SUSPENDED, or is gone.
slice_preempted() {
  local state
  if (( queued )); then
    describe "${queued_describe[@]}"
    echo "launch/tpu_pod.sh: queued resource $queued_resource is $state" >&2
    case "$state" in SUSPENDING|SUSPENDED|GONE) return 0 ;; ACTIVE) ;; *) return 1 ;; esac
  fi
  describe "${node_describe[@]}"
  echo "launch/tpu_pod.sh: $name is $state" >&2
  [[ "$state" == PREEMPTED ]]
}

# A new slice in place of a preempted one: the preempted one deleted, the dead run's
# workdir lock removed (its processes went with the slice; otherwise the new run would
# wait for the lock's heartbeat to go stale), the slice created again.
recreate_slice() {
  delete_slice || return
  run gcloud storage rm "$workdir_lock" || true
  create_slice
}

delete_at_exit() {
  local rc=$?
  if (( run_delete )); then
    echo "launch/tpu_pod.sh: deleting $name" >&2
    delete_slice || true
  fi
  exit "$rc"
}
if (( run_compile )); then
  # Stops here (exit 1, with what to change) when the step does not fit the chips.
  (cd "$repo" && run "$local_python" -m memorizing_jax.compile --topology="$topology" \
     "${train_flags[@]}")
fi

# From here on a failure deletes the slice (unless --keep).
if (( ! dry_run )); then trap delete_at_exit EXIT; fi

if (( run_create )); then create_slice; fi

# Set up and train; after a failure on a preempted slice, a new slice and again.
restarts=0 setup_now=$run_setup
while (( setup_now || run_train )); do
  rc=0
  if (( setup_now )); then setup_slice || rc=$?; fi
  if (( rc == 0 && run_train )); then train_on_slice || rc=$?; fi
  (( rc != 0 )) || break
  if (( restarts < max_restarts )) && slice_preempted; then
    restarts=$(( restarts + 1 ))
    echo "launch/tpu_pod.sh: $name was preempted: creating it again and resuming from the last checkpoint in $workdir (restart $restarts of $max_restarts)" >&2
    recreate_slice
    setup_now=1
    continue
  fi
  exit "$rc"
done

if (( dry_run )) && (( run_setup || run_train )) && (( max_restarts > 0 )); then
  echo "launch/tpu_pod.sh: on preemption (up to $max_restarts times), after training fails and the describe command below says so, it runs:" >&2
  listing=1
  if (( queued )); then echo "    $(command_line "${queued_describe[@]}")" >&2
  else echo "    $(command_line "${node_describe[@]}")" >&2; fi
  recreate_slice
  setup_slice
  if (( run_train )); then train_on_slice; fi
  listing=0
fi

if (( dry_run )) && (( run_delete )); then
  delete_slice
fi
