#!/usr/bin/env bash
# Run the six built-in studies on Fashion-MNIST and on the synthetic source, as committed under docs/results/.
# Usage: bash docs/results/run-studies.sh [fashion|synthetic|all]    (from the project root; ~1 hour on 2 CPU cores)
# Needs Fashion-MNIST in Debian's folder (bash benchmarks/get-fashion-mnist.sh). Runs go to an `mlflow server` on
# loopback (two lanes of studies write at once: SQLite alone would serialize them); reports to docs/results/<source>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WHICH=${1:-all}
WORK=${STUDY_WORK:-$ROOT/.studies}
mkdir -p "$WORK"
PY=${PYTHON:-$ROOT/.venv/bin/python}
export TRANSFERLAB_CACHE=${TRANSFERLAB_CACHE:-$WORK/cache} OMP_NUM_THREADS=1 COLUMNS=200 PYTHONPATH=$ROOT/platform:$ROOT/plugins
PORT=${STUDY_PORT:-5077}
"$(dirname "$PY")/mlflow" server --host 127.0.0.1 --port "$PORT" --workers 2 --backend-store-uri "sqlite:///$WORK/mlflow.db" \
  --artifacts-destination "$WORK/artifacts" > "$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/health" > /dev/null; do sleep 1; done
export MLFLOW_TRACKING_URI=http://127.0.0.1:$PORT

D=/usr/share/datasets/fashion-mnist
FM="fashion_mnist(root='$D')"
FM_A="$FM | split(part='A', how='min_overlap')"                      # pretraining source: 5 classes
FM_B="fashion_mnist(root='$D', val_fraction=0.0) | split(part='B', how='min_overlap') | images_per_class(n=20)"  # held out, 20 labelled per class
DIGITS="digits(val_fraction=0.0) | images_per_class(n=20)"           # scikit-learn's 8×8 digits, 20 labelled per class
BACKBONE="timm(model='resnet10t', small_stem='off')"
TRAINING="train(steps=200, batch_size=128, resolution=32)"
TASKS="knn | linear"

study() {  # NAME OUTDIR EXPERIMENT SOURCE TARGET...
  local name=$1 out=$2 experiment=$3 source=$4; shift 4
  local targets=() start
  for t in "$@"; do targets+=(--target "$t"); done
  start=$(date +%s)
  "$PY" -m transferlab study "$name" --source "$source" "${targets[@]}" --backbone "$BACKBONE" --training "$TRAINING" \
    --seeds 2 --tasks "$TASKS" --experiment "$experiment" --out "$out" > "$WORK/$name-$experiment.log" 2>&1 \
    && echo "$name on $experiment: $(( $(date +%s) - start )) s" | tee -a "$WORK/times.txt" \
    || echo "$name on $experiment: FAILED after $(( $(date +%s) - start )) s, see $WORK/$name-$experiment.log" | tee -a "$WORK/times.txt"
}

fashion_lane1() {
  study images_per_class docs/results/fashion-mnist/images_per_class fashion-mnist "$FM_A" "$FM_B" "$DIGITS"
  study coarse_to_fine docs/results/fashion-mnist/coarse_to_fine fashion-mnist "$FM_A" "$FM_B" "$DIGITS"
  study fixed_budget docs/results/fashion-mnist/fixed_budget fashion-mnist "$FM_A" "$FM_B" "$DIGITS"
}
fashion_lane2() {
  study num_classes docs/results/fashion-mnist/num_classes fashion-mnist "$FM_A" "$FM_B" "$DIGITS"
  study target_removed docs/results/fashion-mnist/target_removed fashion-mnist-full "$FM" "$FM_B" "$DIGITS"
  study class_split docs/results/fashion-mnist/class_split fashion-mnist-full "$FM" "$FM_B" "$DIGITS"
}
SYN="synthetic(train=100)"                                            # 64 classes × 100 training images
SYN_HELD="synthetic(part='heldout', val=0) | images_per_class(n=20)"  # its 16 held-out leaves, 20 labelled per class
synthetic_lane1() {
  for name in images_per_class coarse_to_fine fixed_budget; do
    study "$name" "docs/results/synthetic/$name" synthetic "$SYN" "$SYN_HELD" "$DIGITS"
  done
}
synthetic_lane2() {
  study num_classes docs/results/synthetic/num_classes synthetic "$SYN" "$SYN_HELD" "$DIGITS"
  study class_split docs/results/synthetic/class_split synthetic "$SYN" "$SYN_HELD" "$DIGITS"
  study target_removed docs/results/synthetic/target_removed synthetic-removed "$SYN" "$SYN | split(part='B')" "$DIGITS"
}

case $WHICH in  # two lanes at once; `wait` names them (a bare `wait` would also wait for the server)
  fashion) fashion_lane1 & one=$!; fashion_lane2 & two=$! ;;
  synthetic) synthetic_lane1 & one=$!; synthetic_lane2 & two=$! ;;
  all) { fashion_lane1; synthetic_lane1; } & one=$!; { fashion_lane2; synthetic_lane2; } & two=$! ;;
  *) echo "usage: $0 [fashion|synthetic|all]" >&2; exit 2 ;;
esac
wait "$one" "$two"
"$PY" -c "import platform, torch; print(platform.node(), platform.processor() or platform.machine(), 'torch', torch.__version__)" >> "$WORK/times.txt"
cat "$WORK/times.txt"
