#!/usr/bin/env bash
# The cephalometric CPU benchmark behind the tables of docs/benchmarks.md (about 2.5 hours on 2 CPU cores).
#   bash scripts/benchmark_cephalometric.sh [DATA_DIR] [OUT_DIR]
# DATA_DIR holds images/ and splits/ (default ../shared/data/cephalometric).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/cephalometric}
OUT=${2:-output/benchmark}
CFG=configs/examples/cephalometric.yaml
PATHS=(DATASET.ROOT "$DATA" DATASET.SRC_TARGETS "$DATA/splits/train_val_test.json")
mkdir -p "$OUT"

# The floor: every landmark at its mean training position.
python scripts/mean_position_baseline.py --json "$DATA/splits/train_val_test.json" --root "$DATA"

# Three U-Nets that differ only in SOLVER.SEED, trained side by side (one thread each).
for seed in 42 1 2; do
  OMP_NUM_THREADS=1 /usr/bin/time -v python main.py --cfg $CFG "${PATHS[@]}" \
    SOLVER.SEED $seed OUTPUT.OUTPUT_DIR "$OUT/seed$seed" > "$OUT/seed$seed.log" 2>&1 &
done
wait

# Decoders, Gaussian fit and flip TTA on the first model's best checkpoint.
python scripts/benchmark_decoding.py --cfg $CFG --checkpoint "$OUT/seed42/model_best.model" \
  "${PATHS[@]}" | tee "$OUT/decoding.md"

# The three as an ensemble: S-MHA, E-MHA, E-CPV with calibrated uncertainty.
python main.py --cfg $CFG "${PATHS[@]}" OUTPUT.OUTPUT_DIR "$OUT/ensemble" \
  TRAINER.INFERENCE_ONLY True INFERENCE.ENSEMBLE_INFERENCE True \
  INFERENCE.ENSEMBLE_CHECKPOINTS "[\"$OUT/seed42/model_best.model\", \"$OUT/seed1/model_best.model\", \"$OUT/seed2/model_best.model\"]"

# 4-fold cross-validation (shorter: 10 epochs per fold).
python main.py --cfg $CFG DATASET.ROOT "$DATA" DATASET.SRC_TARGETS "$DATA/splits" \
  TRAINER.CROSS_VALIDATION True SOLVER.MAX_EPOCHS 10 OUTPUT.OUTPUT_DIR "$OUT/cv"
