#!/usr/bin/env bash
# The default recipe on every benchmark dataset at once: trains configs/benchmarks/cpu_budget.yaml
# (the CPU budget, everything else default) on the cephalograms and the spine X-rays, then prints
# one table of test errors, gross misses, seconds per epoch and peak memory.
#
#   scripts/benchmark_datasets.sh [OUT] [cpu|cuda] [KEY VALUE ...]
#
# OUT defaults to output/benchmark_datasets; the data is read from $LANNUNET_DATA (default
# ../shared/data), one folder per dataset with splits/train_val_test.json. Extra KEY VALUE pairs
# go to every run (e.g. SOLVER.SEED 1). A run whose folder already holds results is not
# repeated. About 1 to 1.5 hours per dataset on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-output/benchmark_datasets}
device=${2:-cpu}
shift $(($# < 2 ? $# : 2))
data=${LANNUNET_DATA:-../shared/data}
datasets=(cephalometric spine)
runs=()
for name in "${datasets[@]}"; do
    root="$data/$name"
    if [[ ! -f $root/splits/train_val_test.json ]]; then
        echo "error: $root/splits/train_val_test.json not found (set LANNUNET_DATA)" >&2
        exit 2
    fi
    run="$out/$name"
    runs+=("$run")
    if [[ -f $run/results/model_best/predictions.csv ]]; then
        echo "$name: results already in $run"
        continue
    fi
    mkdir -p "$run"
    echo "$name: training into $run"
    /usr/bin/time -v -o "$run/time.txt" python main.py --cfg configs/benchmarks/cpu_budget.yaml \
        DATASET.ROOT "$root" DATASET.SRC_TARGETS "$root/splits/train_val_test.json" \
        DATASET.NAME "$name" TRAINER.DEVICE "$device" OUTPUT.OUTPUT_DIR "$run" "$@" \
        >"$run/stdout.txt" 2>&1 || {
        echo "error: $name failed; see $run/stdout.txt" >&2
        exit 1
    }
done
python scripts/benchmark_table.py "${runs[@]}"
