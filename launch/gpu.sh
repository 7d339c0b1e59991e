#!/usr/bin/env bash
# Train on one host with its GPUs: one process drives all of them (the mesh's data
# axis spans the GPUs). For several GPU hosts, run memorizing_jax.main on each host
# with --coordinator_address/--num_processes/--process_id (see docs/launching.md).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: launch/gpu.sh [options] [memorizing_jax.main flags ...]

Trains on this host's GPUs with one process (all visible GPUs, or those of --gpus).

options:
  --gpus LIST        GPU indices to use, e.g. 0,1,2,3 (default: all; sets CUDA_VISIBLE_DEVICES)
  --mem_fraction F   share of each GPU's memory JAX preallocates, 0 < F <= 1 (default: JAX's 0.75)
  --python PY        interpreter (default: $PYTHON, else .venv/bin/python of this
                     checkout, else python3)
  --dry-run          print the command and its environment, run nothing
  -h, --help         this message

JAX must be installed with CUDA support: pip install -e '.[gpu]' (jax[cuda13];
jax[cuda12] for drivers older than CUDA 13)

example:
  launch/gpu.sh --gpus 0,1 --gin_file=gin/experiments/table4_512_xl_mem8k.gin \
    --gin_file=gin/data/python_stdlib.gin --workdir=runs/stdlib_mem8k
EOF
}

die() {
  echo "launch/gpu.sh: error: $*" >&2
  echo "run launch/gpu.sh --help for usage" >&2
  exit 2
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
gpus="" mem_fraction="" python="${PYTHON:-}" dry_run=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --gpus) [[ $# -ge 2 ]] || die "--gpus needs a value"; gpus="$2"; shift 2 ;;
    --gpus=*) gpus="${1#*=}"; shift ;;
    --mem_fraction) [[ $# -ge 2 ]] || die "--mem_fraction needs a value"; mem_fraction="$2"; shift 2 ;;
    --mem_fraction=*) mem_fraction="${1#*=}"; shift ;;
    --python) [[ $# -ge 2 ]] || die "--python needs a value"; python="$2"; shift 2 ;;
    --python=*) python="${1#*=}"; shift ;;
    --dry-run|--dry_run) dry_run=1; shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done

[[ $# -ge 1 ]] || { usage >&2; exit 2; }
if [[ -n "$gpus" ]]; then
  [[ "$gpus" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus must be indices like 0,1,2, got '$gpus'"
fi
if [[ -n "$mem_fraction" ]]; then
  [[ "$mem_fraction" =~ ^(0?\.[0-9]*[1-9][0-9]*|1(\.0*)?)$ ]] ||
    die "--mem_fraction must be in (0, 1], got '$mem_fraction'"
fi
if [[ -z "$python" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python=python3; fi
fi

env_vars=(JAX_PLATFORMS=cuda)
[[ -n "$gpus" ]] && env_vars+=(CUDA_VISIBLE_DEVICES="$gpus")
[[ -n "$mem_fraction" ]] && env_vars+=(XLA_PYTHON_CLIENT_MEM_FRACTION="$mem_fraction")
command=("$python" -m memorizing_jax.main --distributed=off "$@")

if (( dry_run )); then
  echo "env ${env_vars[*]} ${command[*]}"
  exit 0
fi
command -v "$python" >/dev/null 2>&1 || die "python interpreter '$python' not found (use --python)"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | sed 's/^/GPU /'
else
  die "nvidia-smi not found: no NVIDIA driver on this host (for CPU use launch/local.sh)"
fi
exec env "${env_vars[@]}" "${command[@]}"
