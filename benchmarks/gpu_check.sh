#!/usr/bin/env bash
# The GPU check of transferlab: the one script a session with a GPU machine runs. An estimated 4-6 minutes on an H100; every
# step is bounded with `timeout` and the steps share a budget (GPU_CHECK_BUDGET, 340 s), so it ends within 6 minutes.
#
# From the project root, optionally after `../shared/device/prepare-wheels.sh .whl` (mlflow, optuna, nltk for the device
# image; no step here needs them, so the check runs without), call the device tool once:
#
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=480)
#
# then read files_at/summary.txt (one line per step) and gpu-check.log (everything, in order); bench-training*.txt hold
# the throughput ratio with the GPU name. To rerun only some steps on the still-warm machine:
#   run(command="GPU_CHECK_ONLY='tests compile' bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=480)
#
# Steps, in order (keys for GPU_CHECK_ONLY): env (nvidia-smi, versions), wheels (.whl → /tmp/site, if present),
# import (transferlab from PYTHONPATH=platform:plugins, its plugins, the CUDA device), tests (pytest -m device: the
# [cuda] cases and tests/test_devices.py, junit XML), bench (bench_training.py, eager: bf16 autocast + channels_last with the
# subset resident, ratio ÷ bare, target ≥ 0.90, and the peak GPU memory), probe (bench_linear_probe.py), nvjpeg (images/s of
# `images.decode_files` on generated ImageNet-like JPEGs with nvjpeg and with Pillow's processes, peak GPU memory), ddp
# (torchrun --nproc_per_node <GPUs> of a tiny `transferlab pretrain`: needs mlflow, from the wheels), compile
# (bench_training.py --compile, when at least 120 s of the budget are left).
# A failed step does not stop the next; the exit status is 1 if any step failed, 0 otherwise.
#
# Dry run on a CPU machine (the [cuda] cases are skipped, the benchmarks run on the CPU):
#   OUT=/tmp/gpucheck PATH=/work/main/.venv/bin:$PATH bash benchmarks/gpu_check.sh
# Environment: OUT (default ./gpu-check-out), PYTHON (python3), GPU_CHECK_WHEELS (.whl), GPU_CHECK_SITE (/tmp/site),
# GPU_CHECK_BUDGET (seconds, 340), GPU_CHECK_ONLY (step keys, default all), GPU_CHECK_MAXFAIL (pytest --maxfail, 5).

set -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
OUT=${OUT:-./gpu-check-out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2
PY=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
SITE=${GPU_CHECK_SITE:-/tmp/site}
BUDGET=${GPU_CHECK_BUDGET:-340}
ONLY=${GPU_CHECK_ONLY:-env wheels import tests bench probe nvjpeg ddp compile}
MAXFAIL=${GPU_CHECK_MAXFAIL:-5}
DEVICE_TESTS="tests/test_devices.py tests/test_loader.py tests/test_features.py tests/test_probes.py tests/test_timm.py tests/test_decoding.py"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PY OUT

: >"$OUT/gpu-check.log"
exec 3>&1 4>&2
exec > >(tee -a "$OUT/gpu-check.log") 2>&1  # everything printed from here on also goes to the log
TEE=$!

SUMMARY=()
FAILED=0
log() { printf '%s\n' "$@"; }
wanted() { [[ " $ONLY " == *" $1 "* ]]; }

# step KEY MIN_SECONDS MAX_SECONDS FILE COMMAND...: run COMMAND under `timeout`, with at most MAX_SECONDS and what is
# left of the budget, skipped when less than MIN_SECONDS are left; its output also goes to $OUT/FILE unless FILE is '-'.
step() {
  local key=$1 min=$2 max=$3 file=$4
  shift 4
  wanted "$key" || return 0
  local left=$((BUDGET - SECONDS)) limit=$max rc started=$SECONDS label="$*"
  ((left < limit)) && limit=$left
  if ((limit < min)); then
    log "" "### $key: skipped, ${left} s of the ${BUDGET} s budget left (needs ${min} s)"
    SUMMARY+=("$(printf '%-8s SKIPPED  (budget: %s s left, needs %s s)' "$key" "$left" "$min")")
    return 0
  fi
  log "" "### $key (at most ${limit} s): $label"
  if declare -F "$1" >/dev/null; then  # a shell function: run it in a child bash that `timeout` can stop
    set -- bash -c "$(declare -f "$1"); $1"
  fi
  if [[ $file == - ]]; then
    timeout -k 10 "$limit" "$@"
  else
    timeout -k 10 "$limit" "$@" | tee "$OUT/$file"
  fi
  rc=$?
  local verdict=ok
  if ((rc == 124 || rc == 137)); then verdict="TIMEOUT after ${limit} s"; elif ((rc != 0)); then verdict="FAILED (exit $rc)"; fi
  [[ $verdict == ok ]] || FAILED=1
  SUMMARY+=("$(printf '%-8s %-24s %4d s  %s' "$key" "$verdict" $((SECONDS - started)) "${label:0:150}")")
  log "### $key: $verdict in $((SECONDS - started)) s"
}

log "transferlab GPU check, $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(uname -n), in $ROOT; output in $OUT"
log "git: $(git rev-parse --short HEAD 2>/dev/null || echo 'no git') $(git status --porcelain 2>/dev/null | wc -l | tr -d ' ') changed files"

# ---- env: the GPU and the software ----------------------------------------------------------------------------
export GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  GPU=1
  export TRANSFERLAB_REQUIRE_CUDA=1  # the [cuda] cases fail rather than skip if torch cannot use the GPU
fi
env_report() {
  if ((GPU)); then
    nvidia-smi -L
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.max.sm,power.limit,temperature.gpu --format=csv
  else
    echo "nvidia-smi: no NVIDIA GPU here: a dry run (the [cuda] cases are skipped, the benchmarks run on the CPU)"
  fi
  echo "cpus: $(nproc), memory: $(free -g 2>/dev/null | awk '/^Mem:/ {print $2 " GiB"}'), python: $(command -v "$PY") ($("$PY" --version 2>&1))"
  "$PY" -m pip list 2>/dev/null | grep -i -E '^(torch|torchvision|timm|triton|numpy|scikit-learn|pluggy|rich|pytest|pytest-timeout|mlflow|mlflow-skinny|optuna|nltk) ' || true
}
step env 5 30 - env_report

# ---- wheels: packages the device image lacks ------------------------------------------------------------------
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  step wheels 10 90 - "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
elif wanted wheels; then
  log "" "### wheels: none in $WHEELS, nothing installed (no step needs mlflow, optuna or nltk)"
  SUMMARY+=("$(printf '%-8s %-24s' wheels "none in $WHEELS")")
fi
export PYTHONPATH="$ROOT/platform:$ROOT/plugins:$SITE${PYTHONPATH:+:$PYTHONPATH}"
log "PYTHONPATH=$PYTHONPATH"

# ---- import: the project from the source tree, its plugins, the device ------------------------------------------
import_report() {
  "$PY" - <<'PYTHON'
import importlib.metadata
import os

import torch

import transferlab as tl
from transferlab.devices import device_name, memory_bytes, resolve_device
from transferlab.plugins import get_plugin_manager

print(f"transferlab {tl.__version__} from {os.path.dirname(tl.__file__)}", end="")
try:
    importlib.metadata.version("transferlab")
    print(" (package metadata found)")
except importlib.metadata.PackageNotFoundError:
    print(" (no package metadata: not installed, imported through PYTHONPATH; __version__ falls back to 0.0.0)")
plugins = sorted(name for name, _ in get_plugin_manager().list_name_plugin())
print(f"plugins: {', '.join(plugins)}")
registry = tl.get_registry()
for kind in ("source", "policy", "backbone", "task"):
    print(f"  {kind}: {', '.join(sorted(e.name for e in registry.entries(kind)))}")
print(f"backbone resnet18 parses to {registry.parse('backbone', 'resnet18').spec()}")
device = resolve_device("auto")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; auto device: {device} = "
      f"{device_name(device)}, {memory_bytes(device) / 2**30:.0f} GiB")
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(device)
    print(f"compute capability {props.major}.{props.minor}, {props.multi_processor_count} SMs, bf16 supported: "
          f"{torch.cuda.is_bf16_supported()}, TF32 matmul: {torch.backends.cuda.matmul.allow_tf32}, TF32 cuDNN: {torch.backends.cudnn.allow_tf32}")
elif os.environ.get("TRANSFERLAB_REQUIRE_CUDA"):
    raise SystemExit("nvidia-smi sees a GPU, but torch.cuda.is_available() is False")
PYTHON
}
step import 5 90 - import_report

# ---- tests: the device tests ------------------------------------------------------------------------------------
PYTEST_TIMEOUT=()
"$PY" -c "import pytest_timeout" 2>/dev/null && PYTEST_TIMEOUT=(--timeout=150)
# shellcheck disable=SC2086
step tests 60 150 - "$PY" -m pytest -q -m device -p no:cacheprovider --maxfail="$MAXFAIL" --durations=15 \
  --junitxml="$OUT/junit-devices.xml" "${PYTEST_TIMEOUT[@]}" $DEVICE_TESTS

# ---- benchmarks --------------------------------------------------------------------------------------------------
step bench 60 150 bench-training.txt "$PY" benchmarks/bench_training.py
step probe 30 60 bench-linear-probe.txt "$PY" benchmarks/bench_linear_probe.py

# ---- nvjpeg: decoding throughput on the GPU vs Pillow's processes -------------------------------------------------
nvjpeg_check() {
  "$PY" - <<'PYTHON'
import os, sys, tempfile, time
from pathlib import Path

import torch

sys.path.insert(0, os.getcwd())
from benchmarks.bench_decode import generate
from transferlab import images

n = 2000
with tempfile.TemporaryDirectory() as folder:
    paths = [str(p.relative_to(folder)) for p in generate(Path(folder), n)]
    rates = {}
    for decoder in ("pil", "nvjpeg"):
        os.environ[images.DECODER_ENV] = decoder
        images.decode_files(folder, paths[:128], 64)  # warm: processes started, nvjpeg initialised
        torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
        start = time.perf_counter()
        out = images.decode_files(folder, paths, 64)
        rates[decoder] = n / (time.perf_counter() - start)
        assert all(reason is None for _, reason in out) and out[0][0].shape == (64, 64, 3)
peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
print(f"RESULT nvjpeg decode {rates['nvjpeg']:,.0f} images/s vs Pillow in {images.usable_cpus()} processes {rates['pil']:,.0f} images/s "
      f"({rates['nvjpeg'] / rates['pil']:.2f} ×); {n} JPEGs ~500×375 → 64 px; peak GPU memory {peak:.2f} GiB")
PYTHON
}
if ((GPU)); then
  step nvjpeg 30 60 nvjpeg.txt nvjpeg_check
elif wanted nvjpeg; then
  SUMMARY+=("$(printf '%-8s %-24s' nvjpeg 'skipped: no GPU')")
fi

step compile 120 240 bench-training-compile.txt "$PY" benchmarks/bench_training.py --compile

# ---- ddp (issue 14, torchrun) -- begin ----------------------------------------------------------------------
# With 2+ GPUs: a tiny pretraining under `torchrun --nproc_per_node <GPUs>` (NCCL) and in one process, each in its own
# MLflow store (needs mlflow: carry .whl); the train losses must agree within 5% (bf16 autocast), one run recorded.
# One GPU: skipped (DDP needs two).
ddp_check() {
  local gpus dir
  gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())")
  if ((gpus < 2)); then echo "ddp: $gpus GPU(s), DistributedDataParallel needs 2: skipped"; return 0; fi
  dir=$(mktemp -d)
  local args=(pretrain --source "synthetic(branching=(2, 2, 3), train=40, val=4, test=0)" --backbone "timm('resnet18')"
              --training "train(epochs=3, batch_size=64, resolution=32)")
  TRANSFERLAB_CACHE=$dir/cache MLFLOW_TRACKING_URI=sqlite:///$dir/one.db "$PY" -m transferlab "${args[@]}" || return 1
  TRANSFERLAB_CACHE=$dir/cache MLFLOW_TRACKING_URI=sqlite:///$dir/ddp.db "$PY" -m torch.distributed.run --standalone \
    --nproc_per_node "$gpus" -m transferlab "${args[@]}" || return 1
  "$PY" - "$dir" "$gpus" <<'PYTHON'
import sys
from mlflow import MlflowClient
dir, gpus = sys.argv[1], sys.argv[2]
losses = {}
for name in ("one", "ddp"):
    client = MlflowClient(f"sqlite:///{dir}/{name}.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", [(r.info.run_name, r.info.status) for r in runs]
    losses[name] = [m.value for m in sorted(client.get_metric_history(runs[0].info.run_id, "pretrain/train_loss"), key=lambda m: m.step)]
worst = max(abs(a - b) / abs(a) for a, b in zip(losses["one"], losses["ddp"]))
print(f"RESULT ddp {gpus} GPUs: train loss 1 process {losses['one']}, {gpus} processes {losses['ddp']}, worst relative difference {worst:.2e}")
assert worst < 0.05, worst
PYTHON
}
if ((GPU)); then
  step ddp 60 150 ddp.txt ddp_check
elif wanted ddp; then
  SUMMARY+=("$(printf '%-8s %-24s' ddp 'skipped: no GPU')")
fi
# ---- ddp (issue 14, torchrun) -- end ------------------------------------------------------------------------

# ---- summary ----------------------------------------------------------------------------------------------------
{
  echo "transferlab GPU check: $( ((FAILED)) && echo FAILED || echo passed) in $SECONDS s (budget $BUDGET s); GPU: $( ((GPU)) && nvidia-smi --query-gpu=name --format=csv,noheader | head -1 || echo 'none (dry run)')"
  printf '%s\n' "${SUMMARY[@]}"
  grep -h '^RESULT' "$OUT/bench-training.txt" "$OUT/nvjpeg.txt" "$OUT/ddp.txt" "$OUT/bench-training-compile.txt" 2>/dev/null | sed 's/^/  /'
} | tee "$OUT/summary.txt"

exec 1>&3 2>&4 3>&- 4>&-  # close the log's pipe and let tee finish writing
wait "$TEE" 2>/dev/null
exit "$FAILED"
