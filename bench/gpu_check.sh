#!/usr/bin/env bash
# GPU check, run from the repository root on a machine with a CUDA GPU (under 8 minutes on an H100):
#
#     bash bench/gpu_check.sh DATA_DIR [REFERENCE_LOG]
#
# 1. the full default ML-100K run (main.py, early stopping) from DATA_DIR/ML-100K/*.csv, its log
#    compared with REFERENCE_LOG (e.g. the published GPU log ReFINe_ML-100K.out) when given;
# 2. timed epochs of synthetic ML-1M-size and Amazon-Book-size graphs: the published design,
#    ours with the dense sampler and ours with the sparse one (s/epoch, ratios, peak GPU memory);
# 3. the paper preset over 5 seeds on ML-100K (experiments.py, SWEEP_JOBS runs on the GPU at a time),
#    stopped after SWEEP_LIMIT seconds (0: skip). Stopped runs keep their state in $OUT/sweep: carry
#    that folder back and rerun the same experiments.py command to continue it.
# Results go to $OUT (default /tmp/gpu_check): the run's log, one JSON per bench, the sweep folder.
# Local dry run on CPU with tiny sizes:
#     SCALE=0.02 EPOCHS=2 DEVICE=cpu bash bench/gpu_check.sh ../shared/datasets
set -uo pipefail
DATA_DIR=${1:?usage: bash bench/gpu_check.sh DATA_DIR [REFERENCE_LOG]}
REFERENCE_LOG=${2:-}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SCALE=${SCALE:-1}          # shrink factor of the synthetic graphs
EPOCHS=${EPOCHS:-1000}     # ML-100K epoch budget (early stopping ends the default run near 420)
OUT=${OUT:-/tmp/gpu_check}
SWEEP_LIMIT=${SWEEP_LIMIT:-300}
SWEEP_JOBS=${SWEEP_JOBS:-4}
REPO=$(pwd)
DATA_DIR=$(cd "$DATA_DIR" && pwd) || exit 2
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

echo "== machine"
nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
"$PYTHON" -c "import torch, torch_geometric; print('torch', torch.__version__, 'pyg', torch_geometric.__version__, 'cuda', torch.cuda.is_available())" || exit 1
status=0

echo "== 1. ML-100K default run (--epochs $EPOCHS, device $DEVICE)"
RUN_DIR=$(mktemp -d)  # main.py writes result/ into its working directory
start=$(date +%s)
(cd "$RUN_DIR" && timeout 270 "$PYTHON" "$REPO/main.py" --data_dir "$DATA_DIR" --dataset ML-100K \
    --epochs "$EPOCHS" --device "$DEVICE" > "$OUT/ML-100K.out" 2> "$OUT/ML-100K.err") || { echo "ML-100K run failed or timed out"; status=1; }
end=$(date +%s)
grep -E "^(Early stopping at|Training completed)" "$OUT/ML-100K.out"
echo "wall $((end - start)) s, epochs run: $(grep -c '^Epoch:' "$OUT/ML-100K.out")"
sed -n '/Final Test Results/,/####/p' "$OUT/ML-100K.out"
if [ -n "$REFERENCE_LOG" ] && [ -f "$REFERENCE_LOG" ]; then
    "$PYTHON" compare.py "$REFERENCE_LOG" "$OUT/ML-100K.out" --labels published ours --markdown || status=1
fi

bench() {  # preset, time limit, epochs, then extra flags
    local preset=$1 limit=$2 epochs=$3
    shift 3
    echo "== bench $preset x$SCALE ($epochs epochs, the last refined)"
    timeout "$limit" "$PYTHON" bench/bench_epoch.py --synthetic "$preset" --scale "$SCALE" --device "$DEVICE" \
        --impls published,dense,sparse --epochs "$epochs" --t "$epochs" --out "$OUT/bench_$preset.json" "$@" \
        2>&1 | grep -v -i -E "warning|^ +(adjacency|return|total_loss)|^Consider" || status=1
}
bench ml-1m 75 3
bench amazon-book 120 2

if [ "$SWEEP_LIMIT" -gt 0 ]; then
    echo "== 3. paper preset, 5 seeds, ML-100K ($SWEEP_JOBS at a time, at most $SWEEP_LIMIT s)"
    start=$(date +%s)
    # SIGTERM stops the sweep as Ctrl-C does: every run saves its state, the report covers what finished.
    timeout "$SWEEP_LIMIT" "$PYTHON" experiments.py --dataset ML-100K --seeds 5 --jobs "$SWEEP_JOBS" \
        --out "$OUT/sweep" -- --data_dir "$DATA_DIR" > "$OUT/sweep.txt" 2> "$OUT/sweep.err"
    echo "sweep exit $?, wall $(($(date +%s) - start)) s"
    "$PYTHON" experiments.py --report "$OUT/sweep" 2>/dev/null || echo "no finished sweep run yet"
fi
echo "== done (status $status); files in $OUT"
ls -l "$OUT"
exit $status
