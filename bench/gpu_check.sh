#!/usr/bin/env bash
# The GPU check in one command, from the repository root on a machine with a CUDA GPU:
#
#     OUT=<folder> bash bench/gpu_check.sh            # at most 480 s by its own clock
#     DRY_RUN=1 OUT=$(mktemp -d) bash bench/gpu_check.sh   # every step on the CPU at tiny sizes
#
# Steps, each capped with `timeout` and skipped when the remaining budget is too short:
# versions and GPU name; the sparse product against the CPU (to 1e-5; two GPU runs bit-identical?);
# host syncs per batch; the full ML-100K ReFINe run (time, test Recall@20 / NDCG@20, against the
# published A6000's 184 s); ReFINe++ ML-100K seconds per epoch; ML-1M-size seconds per epoch
# (synthetic); throughput of 1, 4 and 8 runs at once on the GPU.
# Needs python3 with torch and torch_geometric, and the ML-100K split CSVs in bench/data/ML-100K/
# (git-ignored; bench/README.md says how to put them there). Writes at most 4 files directly in
# $OUT: summary.json (rewritten after every step), check.log (every step's messages), ML-100K.out
# (the full run's log) and ML-100K.test.json. Prints the summary last.
# Exit: 0 when every step ran, 1 when one failed or was skipped, 3 without a usable CUDA GPU.
set -uo pipefail
PYTHON=${PYTHON:-python3}
OUT=${OUT:?set OUT to the folder for the results, e.g. OUT=\$(mktemp -d) bash bench/gpu_check.sh}
DRY_RUN=${DRY_RUN:-0}
BUDGET=${BUDGET:-480}
[ "$DRY_RUN" = 1 ] && BUDGET=${DRY_RUN_BUDGET:-240}  # a dry run on a busy 2-core CPU: under 300 s in all
START=$(date +%s)
cd "$(dirname "$0")/.." || exit 2
export PYTHONUNBUFFERED=1 DRY_RUN
STEPS='' RUN_DIR=''
trap 'rm -rf ${STEPS:+"$STEPS"} ${RUN_DIR:+"$RUN_DIR"}' EXIT
# Checked: with an unusable TMPDIR both would be empty and the steps would write under /.
STEPS=$(mktemp -d 2>/dev/null) && RUN_DIR=$(mktemp -d 2>/dev/null) || {
    echo "error: gpu_check: cannot make a temporary folder in ${TMPDIR:-/tmp} (mktemp -d failed); set TMPDIR to a writable folder; nothing measured" >&2
    exit 2
}
# STEPS: the steps' own JSON and status, gathered into $OUT/summary.json; RUN_DIR: the run's data and result
mkdir -p "$OUT" || exit 2
LOG="$OUT/check.log"
: > "$LOG"
status=0

elapsed() { echo $(($(date +%s) - START)); }

summarize() {  # rewrite $OUT/summary.json from the steps so far ($1: --print to show it)
    "$PYTHON" bench/gpu_check.py summary "$STEPS" "$OUT/summary.json" --elapsed "$(elapsed)" --budget "$BUDGET" ${1:-}
}

# step NAME LIMIT MIN command...: run with `timeout` at most LIMIT s (less when the budget is short;
# skipped below MIN s), stdout into the step's JSON, stderr into check.log, then the summary rewritten.
step() {
    local name=$1 limit=$2 minimum=$3
    shift 3
    echo "$name" >> "$STEPS/order"
    local left=$((BUDGET - $(elapsed) - 10))  # 10 s kept for the last summary
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt "$minimum" ]; then
        echo "skipped 0" > "$STEPS/$name.status"
        echo "== $name: skipped ($left s left, needs $minimum)" >> "$LOG"
        status=1
        summarize
        return 1
    fi
    echo "== $name (at most $limit s): $*" >> "$LOG"
    local begin result
    begin=$(date +%s)
    timeout --kill-after=5 "$limit" "$@" > "$STEPS/$name.json" 2>> "$LOG"
    result=$?
    case $result in
        0) result=ok ;;
        124|137) result=timed_out; status=1 ;;
        *) result=failed_$result; status=1 ;;
    esac
    echo "$result $(($(date +%s) - begin))" > "$STEPS/$name.status"
    summarize
    [ "$result" = ok ]
}

if [ "$DRY_RUN" = 1 ]; then
    DEVICE=cpu
    # Tiny synthetic splits stand in for ML-100K: the dry run needs no data.
    DATA="$RUN_DIR/data"
    DATASET=ml-100k
    timeout 60 "$PYTHON" bench/synthetic.py ml-100k --scale 0.05 --out "$DATA" >> "$LOG" 2>&1
    SCALE=0.02; EPOCHS=1; RUN_EPOCHS="--epochs 2 --r 5 --s 2 --threads 1"
    SYNC_CASES="--cases refine/dense,refine_plus/shared"
    PRODUCT_SIZE="--users 300 --items 200 --edges 5000"; RUNS="1 2"
else
    DEVICE=cuda
    DATA=bench/data
    DATASET=ML-100K
    # No GPU: one line, exit 3, well within 30 s (importing torch is the slow part).
    if ! timeout 25 "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)" 2>> "$LOG"; then
        echo "gpu_check: no CUDA GPU usable by $PYTHON's torch here (see $LOG); nothing measured"
        exit 3
    fi
    SCALE=1; EPOCHS=3; RUN_EPOCHS=""; SYNC_CASES=""
    PRODUCT_SIZE=""; RUNS="1 4 8"
fi
HAVE_DATA=0
[ -f "$DATA/$DATASET/${DATASET}_train_augment.csv" ] && HAVE_DATA=1

step versions 30 5 "$PYTHON" bench/gpu_check.py versions
step product 40 10 "$PYTHON" bench/gpu_check.py product --device "$DEVICE" $PRODUCT_SIZE
step syncs 60 20 "$PYTHON" bench/gpu_check.py syncs --device "$DEVICE" $SYNC_CASES

if [ "$HAVE_DATA" = 1 ]; then
    # The full default run; stopped by its limit it still leaves its log (and the epochs it ran).
    run_begin=$(date +%s)
    step ml100k_run 180 60 "$PYTHON" main.py --data_dir "$DATA" --dataset "$DATASET" --device "$DEVICE" \
        --result_dir "$RUN_DIR/result" --path_name refine $RUN_EPOCHS
    cp "$RUN_DIR/result/refine.out" "$OUT/ML-100K.out" 2>/dev/null
    cp "$RUN_DIR/result/refine.test.json" "$OUT/ML-100K.test.json" 2>/dev/null
    step ml100k_result 10 2 "$PYTHON" bench/gpu_check.py run-summary "$RUN_DIR/result/refine.out" \
        "$RUN_DIR/result/refine.test.json" --wall $(($(date +%s) - run_begin))
    step refine_plus_epoch 45 20 "$PYTHON" bench/gpu_check.py epochs --model refine_plus --device "$DEVICE" \
        --data_dir "$DATA" --dataset "$DATASET" --epochs "$EPOCHS"
else
    echo "== no $DATA/$DATASET/${DATASET}_*.csv: the ML-100K steps are skipped (bench/README.md)" >> "$LOG"
    for name in ml100k_run ml100k_result refine_plus_epoch; do
        echo "$name" >> "$STEPS/order"
        echo "skipped 0" > "$STEPS/$name.status"
    done
    status=1
    summarize
fi

step ml1m_size_epoch 60 20 "$PYTHON" bench/gpu_check.py epochs --model refine --device "$DEVICE" \
    --synthetic ml-1m --scale "$SCALE" --r 250 --epochs "$EPOCHS"

# Throughput on ML-100K-size data (synthetic when the CSVs are absent).
if [ "$HAVE_DATA" = 1 ]; then THROUGHPUT_DATA=(--data_dir "$DATA" --dataset "$DATASET"); else
    THROUGHPUT_DATA=(--synthetic ml-100k --scale "$SCALE"); fi
for runs in $RUNS; do
    step "throughput_$runs" 40 20 "$PYTHON" bench/gpu_check.py throughput --runs "$runs" --device "$DEVICE" \
        --epochs "$EPOCHS" "${THROUGHPUT_DATA[@]}"
done

echo "== done in $(elapsed) s (exit $status)" >> "$LOG"
summarize --print
exit $status
