#!/usr/bin/env bash
# Run the committed search (docs/results/search/fashion-mnist): how to spend 10,800 pretraining images of Fashion-MNIST
# half A (the fixed_budget study's budget and source), 24 trials over 2 workers, against a PostgreSQL server and an
# `mlflow server` on loopback (parallel workers never share SQLite files). Usage, from the project root, as root on
# Debian (PostgreSQL runs as its `postgres` user) or as a user who may run initdb: bash docs/results/run-search.sh
# Needs Fashion-MNIST in Debian's folder (bash benchmarks/get-fashion-mnist.sh) and `pip install -e '.[postgres]'`.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK=${SEARCH_WORK:-$ROOT/.search}
mkdir -p "$WORK"
PY=${PYTHON:-$ROOT/.venv/bin/python}
export TRANSFERLAB_CACHE=${TRANSFERLAB_CACHE:-$WORK/cache} OMP_NUM_THREADS=1 COLUMNS=200 PYTHONPATH=$ROOT/platform:$ROOT/plugins
PG_PORT=${SEARCH_PG_PORT:-55433} PORT=${SEARCH_PORT:-5078}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
AS=(); [ "$(id -u)" = 0 ] && AS=(runuser -u postgres --)
PGDATA=$WORK/postgres  # kept: running the script again continues the same search (its 24 trials done: report only)
FRESH=; [ -d "$PGDATA/data" ] || FRESH=1
mkdir -p "$PGDATA" && { [ "$(id -u)" != 0 ] || chown postgres "$PGDATA"; }
[ -z "$FRESH" ] || "${AS[@]}" "$PG_BIN/initdb" -D "$PGDATA/data" -U transferlab --auth=trust > "$WORK/postgres.log"
"${AS[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA/data" -l "$PGDATA/server.log" -w start \
  -o "-p $PG_PORT -k $PGDATA -c listen_addresses=127.0.0.1" >> "$WORK/postgres.log"
"$(dirname "$PY")/mlflow" server --host 127.0.0.1 --port "$PORT" --workers 2 --backend-store-uri "sqlite:///$WORK/mlflow.db" \
  --artifacts-destination "$WORK/artifacts" > "$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; "${AS[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA/data" -m fast stop > /dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/health" > /dev/null; do sleep 1; done
export MLFLOW_TRACKING_URI=http://127.0.0.1:$PORT
[ -z "$FRESH" ] || "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U transferlab optuna

D=/usr/share/datasets/fashion-mnist
OPTUNA=postgresql+psycopg2://transferlab@127.0.0.1:$PG_PORT/optuna
start=$(date +%s)
"$PY" -m transferlab search --name fashion-mnist-budget \
  --source "fashion_mnist(root='$D') | split(part='A', how='min_overlap')" \
  --target "fashion_mnist(root='$D', val_fraction=0.05) | split(part='B', how='min_overlap') | images_per_class(n=100)" \
  --budget 10800 --trials 24 --space "allocation(steps=(100, 200, 400))" \
  --backbone "timm(model='resnet10t', small_stem='off')" --training "train(steps=200, batch_size=128, resolution=32)" \
  --task knn --pruner median --sampler tpe --workers 2 --storage "$OPTUNA" \
  --out docs/results/search/fashion-mnist 2>&1 | tee "$WORK/search.log"
echo "search fashion-mnist-budget: $(( $(date +%s) - start )) s" | tee -a "$WORK/times.txt"
# the Optuna study as an SQLite file beside the report, for optuna-dashboard without a database server
rm -f docs/results/search/fashion-mnist/optuna.db
"$PY" -c "import optuna, sys; optuna.copy_study(from_study_name='fashion-mnist-budget', from_storage=sys.argv[1], to_storage=sys.argv[2])" \
  "$OPTUNA" sqlite:///docs/results/search/fashion-mnist/optuna.db
