#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: compile the training step for the slice's
# topology here first (python -m memorizing_jax.compile: does it fit?), create the
# slice, copy this checkout to every worker and install it, run the same training
# command on all workers (jax.distributed finds its peers by itself on a TPU VM),
# follow worker 0's log, then delete the slice. --dry-run prints the commands
# instead of running them.
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

required:
  --name NAME             name of the TPU VM
  --zone ZONE             e.g. us-central2-b (v4), us-west4-a (v5e)
  --accelerator TYPE      slice type, e.g. v4-32, v5litepod-16, v3-32
  --workdir gs://...      the run's workdir in a Cloud Storage bucket

options:
  --project PROJECT       gcloud project (default: gcloud's configured one)
  --version VERSION       TPU VM software (default: tpu-ubuntu2204-base)
  --spot                  create a Spot slice (preemptible; rerun to resume the run)
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
  --dry-run               print the gcloud commands, run nothing
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

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
name="" zone="" accelerator="" workdir="" project="" version="tpu-ubuntu2204-base"
spot=0 dry_run=0 steps="compile,create,setup,train,delete" keep=0 python=python3 topology=""
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
    --spot) spot=1; shift ;;
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
archive="/tmp/memorizing_jax_${name}.tar.gz"
remote_dir='~/memorizing_jax'

# One word for a POSIX shell: as it is when safe, else in single quotes.
quote() {
  if [[ "$1" =~ ^[-A-Za-z0-9_.,:/=@+%]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Prints a command (quoted, ready to paste); runs it unless --dry-run.
run() {
  local line="" word
  for word in "$@"; do line+="$(quote "$word") "; done
  echo "${line% }"
  (( dry_run )) || "$@"
}

# The remote training command, every flag quoted for the workers' shell.
printf -v flags_quoted ' %q' --workdir="$workdir" "${train_flags[@]}"
env_quoted=""
if [[ ${#train_env[@]} -gt 0 ]]; then printf -v env_quoted 'env%s ' "$(printf ' %q' "${train_env[@]}")"; fi
train_remote="cd $remote_dir && (trap '' HUP; ${env_quoted}.venv/bin/python -m memorizing_jax.main${flags_quoted}; echo \$? > ~/train.rc) > ~/train.log 2>&1 < /dev/null & echo \$! > ~/train.pid"

delete_at_exit() {
  local rc=$?
  if (( run_delete )); then
    echo "launch/tpu_pod.sh: deleting $name" >&2
    run gcloud compute tpus tpu-vm delete "$name" "${common[@]}" --quiet || true
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

if (( run_create )); then
  create=(gcloud compute tpus tpu-vm create "$name" "${common[@]}"
          --accelerator-type="$accelerator" --version="$version")
  (( spot )) && create+=(--spot)
  run "${create[@]}"
fi

if (( run_setup )); then
  run git -C "$repo" archive --format=tar.gz --output="$archive" HEAD
  run gcloud compute tpus tpu-vm scp "$archive" "$name:memorizing_jax.tar.gz" "${common[@]}" --worker=all
  # The package needs Python >= 3.11; uv fetches one when the image's is older.
  run gcloud compute tpus tpu-vm ssh "$name" "${common[@]}" --worker=all --command="rm -rf $remote_dir && mkdir -p $remote_dir && tar -xzf ~/memorizing_jax.tar.gz -C $remote_dir && cd $remote_dir && $python -m pip install --quiet --user uv && ~/.local/bin/uv venv --quiet --python 3.12 .venv && ~/.local/bin/uv pip install --quiet --python .venv/bin/python -e . 'jax[tpu]'"
fi

if (( run_train )); then
  run gcloud compute tpus tpu-vm ssh "$name" "${common[@]}" --worker=all --command="$train_remote"
  # Worker 0 logs the metrics; follow it until its training process ends.
  run gcloud compute tpus tpu-vm ssh "$name" "${common[@]}" --worker=0 --command="tail -n +1 -f ~/train.log --pid=\$(cat ~/train.pid)"
  run gcloud compute tpus tpu-vm ssh "$name" "${common[@]}" --worker=all --command="test \"\$(cat ~/train.rc)\" = 0 || { echo \"training failed on \$(hostname) (exit \$(cat ~/train.rc)); last lines of ~/train.log:\"; tail -n 30 ~/train.log; exit 1; }"
fi

if (( dry_run )) && (( run_delete )); then
  run gcloud compute tpus tpu-vm delete "$name" "${common[@]}" --quiet
fi
