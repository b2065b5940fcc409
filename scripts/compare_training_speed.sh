#!/usr/bin/env bash
# Training throughput of two checkouts of LaNNU-Net on one config, measured in turns (A B A B ...)
# so that a machine's drift hits both alike. Each run trains two epochs without validation or
# testing into a fresh folder; the figure is epoch 2's samples/s (images already cached).
#
#   scripts/compare_training_speed.sh CHECKOUT_A CHECKOUT_B CONFIG [PAIRS] [KEY VALUE ...]
#
# Prints one line per run and the median samples/s of each checkout.
set -euo pipefail
if (($# < 3)); then
    echo "usage: $0 CHECKOUT_A CHECKOUT_B CONFIG [PAIRS] [KEY VALUE ...]" >&2
    exit 2
fi
a=$(realpath "$1") b=$(realpath "$2") cfg=$(realpath "$3")
shift 3
pairs=3
if (($# % 2 == 1)); then
    pairs=$1
    shift
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The run's JSON without its testing list, so that nothing is tested after training.
repo=$(realpath "$(dirname "$0")/..")
json=$(python - "$repo" "$cfg" "$@" <<'PY'
import sys
sys.path.insert(0, sys.argv.pop(1))
from config import load_cfg
cfg = load_cfg(sys.argv[1], sys.argv[2:])
print(cfg.DATASET.SRC_TARGETS)
PY
)
python - "$json" "$work/no_testing.json" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
data.pop("testing", None)
json.dump(data, open(sys.argv[2], "w"))
PY
speeds_a=() speeds_b=()
for ((pair = 1; pair <= pairs; pair++)); do
    for side in A B; do
        checkout=$a
        [[ $side == B ]] && checkout=$b
        out="$work/$side$pair"
        (cd "$checkout" && python main.py --cfg "$cfg" "$@" DATASET.SRC_TARGETS "$work/no_testing.json" \
            TRAINER.FOLD -1 SOLVER.MAX_EPOCHS 2 TRAINER.PERFORM_VALIDATION False \
            OUTPUT.OUTPUT_DIR "$out" >"$out.log" 2>&1)
        speed=$(python -c "import pandas as pd; print(pd.read_csv('$out/metrics.csv')['samples_per_s'].iloc[-1])")
        echo "pair $pair $side ($checkout): $speed samples/s"
        if [[ $side == A ]]; then speeds_a+=("$speed"); else speeds_b+=("$speed"); fi
    done
done
median='import statistics, sys; print(sys.argv[1], "median", statistics.median(map(float, sys.argv[2:])), "samples/s")'
python -c "$median" A "${speeds_a[@]}"
python -c "$median" B "${speeds_b[@]}"
