#!/usr/bin/env bash
# The GPU check in one command, from the repository root on a machine with a CUDA GPU:
#
#     OUT=<folder> bash bench/gpu_check.sh            # at most 480 s by its own clock
#     DRY_RUN=1 OUT=$(mktemp -d) bash bench/gpu_check.sh   # every step on the CPU at tiny sizes
#
# First line on stdout: python, torch (and its CUDA build), the driver, the GPU and torch_geometric.
# Steps, each capped with `timeout` and skipped when the remaining budget is too short; the caps and
# the 10 s kept for the last summary add up to the 480 s budget (30 s of it for importing torch first):
# a short CPU-against-GPU equivalence run on this machine's torch; versions and GPU name; the sparse
# product against the CPU (to 1e-5; two GPU runs bit-identical?);
# host syncs per batch; the full ML-100K ReFINe run (time, test Recall@20 / NDCG@20, against the
# published A6000's 184 s); ReFINe++ ML-100K seconds per epoch; ML-1M-size seconds per epoch
# (synthetic); throughput of 1, 4 and 8 runs at once on the GPU.
# Needs a python with torch and torch_geometric ($PYTHON; default: the repository's .venv/bin/python if
# it exists, else python3; no step needs pytest), and for the ML-100K steps the four ML-100K split CSVs
# in the first of $DATA_DIR, bench/data, dataset that holds them (<folder>/ML-100K/ML-100K_*.csv).
# bench/data/ and dataset/ are git-ignored: a copy of the repository made with git lacks them, so carry
# the one folder bench/data/ along explicitly (bench/README.md). Writes at most 4 files directly in
# $OUT: summary.json (rewritten after every step), check.log (every step's messages), ML-100K.out
# (the full run's log) and ML-100K.test.json. Prints the summary last.
# Exit: 0 when every step ran, 1 when one failed or was skipped, 2 when it cannot start (no OUT, no
# temporary folder), 3 without a usable CUDA GPU (torch.cuda.is_available() is false), 4 when torch
# cannot be imported, or its import takes longer than IMPORT_LIMIT (30 s): slow, not known to lack a GPU.
set -uo pipefail
START=$(date +%s)
cd "$(dirname "$0")/.." || exit 2
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=$PWD/.venv/bin/python; else PYTHON=python3; fi
fi
OUT=${OUT:?set OUT to the folder for the results, e.g. OUT=\$(mktemp -d) bash bench/gpu_check.sh}
DRY_RUN=${DRY_RUN:-0}
BUDGET=${BUDGET:-480}
[ "$DRY_RUN" = 1 ] && BUDGET=${DRY_RUN_BUDGET:-240}  # a dry run on a busy 2-core CPU: under 300 s in all
IMPORT_LIMIT=${IMPORT_LIMIT:-30}
export PYTHONUNBUFFERED=1 DRY_RUN
STEPS='' RUN_DIR=''
trap 'rm -rf ${STEPS:+"$STEPS"} ${RUN_DIR:+"$RUN_DIR"}' EXIT
# Checked: with an unusable TMPDIR both would be empty and the steps would write under /.
STEPS=$(mktemp -d 2>/dev/null) && RUN_DIR=$(mktemp -d 2>/dev/null) || {
    echo "error: gpu_check: cannot make a temporary folder in ${TMPDIR:-/tmp} (mktemp -d failed); set TMPDIR to a writable folder; nothing measured" >&2
    exit 2
}
# STEPS: the steps' own JSON and status, gathered into $OUT/summary.json; RUN_DIR: the run's data and result
mkdir -p "$OUT" 2>/dev/null || { echo "gpu_check: cannot create OUT=$OUT (a file in the way, or no permission)"; exit 2; }
LOG="$OUT/check.log"
: > "$LOG"
status=0

elapsed() { echo $(($(date +%s) - START)); }

summarize() {  # rewrite $OUT/summary.json from the steps so far ($1: --print to show it)
    "$PYTHON" -m bench.gpu_check summary "$STEPS" "$OUT/summary.json" --elapsed "$(elapsed)" --budget "$BUDGET" ${1:-}
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

# The first line: what this machine has. Importing torch is the slow part: past IMPORT_LIMIT it is
# reported as slow (exit 4), and only torch.cuda.is_available() being false as no GPU (exit 3).
PROBE='import sys, subprocess, platform, torch
try:
    import torch_geometric; pyg = torch_geometric.__version__
except Exception as exc:
    pyg = f"not importable ({type(exc).__name__})"
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
try:
    driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                            text=True, timeout=10).stdout.split("\n")[0].strip() or "none"
except (OSError, subprocess.SubprocessError):
    driver = "none (no nvidia-smi)"
print(f"gpu_check: python {platform.python_version()}, torch {torch.__version__} (CUDA build {torch.version.cuda}), "
      f"driver {driver}, GPU {gpu}, torch_geometric {pyg}")
sys.exit(0 if torch.cuda.is_available() or sys.argv[1] == "1" else 3)'
machine=$(timeout --kill-after=5 "$IMPORT_LIMIT" "$PYTHON" -c "$PROBE" "$DRY_RUN" 2>> "$LOG")
probe=$?
case $probe in
    0) echo "$machine" ;;
    3) echo "gpu_check: no CUDA GPU usable by $PYTHON's torch here (torch.cuda.is_available() is false;" \
            "${machine#gpu_check: }); nothing measured"
       exit 3 ;;
    124|137) echo "gpu_check: $PYTHON took more than $IMPORT_LIMIT s to import torch: slow (a cold or busy disk?), not" \
                  "known to lack a GPU; rerun it, or raise IMPORT_LIMIT; nothing measured"
       exit 4 ;;
    *) echo "gpu_check: $PYTHON cannot import torch (exit code $probe; see $LOG); set PYTHON to a python with torch;" \
            "nothing measured"
       exit 4 ;;
esac

if [ "$DRY_RUN" = 1 ]; then
    DEVICE=cpu
    # Tiny synthetic splits stand in for ML-100K: the dry run needs no data.
    DATA="$RUN_DIR/data"
    DATASET=ml-100k
    timeout 60 "$PYTHON" -m bench.synthetic ml-100k --scale 0.05 --out "$DATA" >> "$LOG" 2>&1
    SCALE=0.02; EPOCHS=1; RUN_EPOCHS="--epochs 2 --r 5 --s 2 --threads 1"
    SYNC_CASES="--cases refine/dense,refine_plus/shared"
    PRODUCT_SIZE="--users 300 --items 200 --edges 5000"; RUNS="1 2"
else
    DEVICE=cuda
    DATASET=ML-100K
    DATA=bench/data
    for folder in ${DATA_DIR:-} bench/data dataset; do
        if [ -f "$folder/$DATASET/${DATASET}_train_augment.csv" ]; then DATA=$folder; break; fi
    done
    SCALE=1; EPOCHS=3; RUN_EPOCHS=""; SYNC_CASES=""
    PRODUCT_SIZE=""; RUNS="1 4 8"
fi
HAVE_DATA=0
[ -f "$DATA/$DATASET/${DATASET}_train_augment.csv" ] && HAVE_DATA=1

# Caps (s): import 30 + equivalence 30 + versions 15 + product 30 + syncs 45 + ml100k_run 140 + ml100k_result 5
# + refine_plus_epoch 40 + ml1m_size_epoch 45 + throughput 3 x 30 + the last summary 10 = 480.
step equivalence 30 10 "$PYTHON" -m bench.gpu_check equivalence --device "$DEVICE"
step versions 15 5 "$PYTHON" -m bench.gpu_check versions
step product 30 10 "$PYTHON" -m bench.gpu_check product --device "$DEVICE" $PRODUCT_SIZE
step syncs 45 20 "$PYTHON" -m bench.gpu_check syncs --device "$DEVICE" $SYNC_CASES

if [ "$HAVE_DATA" = 1 ]; then
    # The full default run; stopped by its limit it still leaves its log (and the epochs it ran). Its
    # printed log goes nowhere (the log file is copied below, its numbers are ml100k_result's): exec, so
    # that `timeout` stops main.py itself.
    run_begin=$(date +%s)
    step ml100k_run 140 60 bash -c 'exec "$@" > /dev/null' main.py "$PYTHON" main.py --data_dir "$DATA" \
        --dataset "$DATASET" --device "$DEVICE" \
        --result_dir "$RUN_DIR/result" --path_name refine $RUN_EPOCHS
    cp "$RUN_DIR/result/refine.out" "$OUT/ML-100K.out" 2>/dev/null
    cp "$RUN_DIR/result/refine.test.json" "$OUT/ML-100K.test.json" 2>/dev/null
    step ml100k_result 5 2 "$PYTHON" -m bench.gpu_check run-summary "$RUN_DIR/result/refine.out" \
        "$RUN_DIR/result/refine.test.json" --wall $(($(date +%s) - run_begin))
    step refine_plus_epoch 40 20 "$PYTHON" -m bench.gpu_check epochs --model refine_plus --device "$DEVICE" \
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

step ml1m_size_epoch 45 20 "$PYTHON" -m bench.gpu_check epochs --model refine --device "$DEVICE" \
    --synthetic ml-1m --scale "$SCALE" --r 250 --epochs "$EPOCHS"

# Throughput on ML-100K-size data (synthetic when the CSVs are absent).
if [ "$HAVE_DATA" = 1 ]; then THROUGHPUT_DATA=(--data_dir "$DATA" --dataset "$DATASET"); else
    THROUGHPUT_DATA=(--synthetic ml-100k --scale "$SCALE"); fi
for runs in $RUNS; do
    step "throughput_$runs" 30 20 "$PYTHON" -m bench.gpu_check throughput --runs "$runs" --device "$DEVICE" \
        --epochs "$EPOCHS" "${THROUGHPUT_DATA[@]}"
done

echo "== done in $(elapsed) s (exit $status)" >> "$LOG"
summarize --print
exit $status
