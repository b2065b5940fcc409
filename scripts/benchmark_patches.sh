#!/usr/bin/env bash
# The full-resolution patch benchmark behind the patch table of docs/methods.md: the resized U-Net (also
# the coarse model), patches at full resolution and at 832 x 672 (8x its samples), each predicted
# by stitching and by coarse-to-fine. About 6 minutes on one H200 (the three trainings share it);
# on 2 CPU cores the patch runs take about 2 hours each.
#   bash scripts/benchmark_patches.sh [DATA_DIR] [OUT_DIR] [DEVICE]
# DATA_DIR holds images/ and splits/ (default ../shared/data/cephalometric); DEVICE cuda or cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/cephalometric}
OUT=${2:-output/benchmark_patches}
DEVICE=${3:-cuda}
COMMON=(DATASET.ROOT "$DATA" DATASET.SRC_TARGETS "$DATA/splits/train_val_test.json"
  TRAINER.DEVICE "$DEVICE")
WORKERS=$([ "$DEVICE" = cuda ] && echo 5 || echo 0)
mkdir -p "$OUT"

train() {  # name config [KEY VALUE ...]
  local name=$1 cfg=$2
  shift 2
  python main.py --cfg "$cfg" "${COMMON[@]}" OUTPUT.OUTPUT_DIR "$OUT/$name" "$@" \
    > "$OUT/$name.log" 2>&1
}
train resized configs/examples/cephalometric.yaml &
train full configs/examples/cephalometric_patches.yaml SAMPLER.NUM_WORKERS "$WORKERS" &
train half configs/examples/cephalometric_patches_832.yaml SAMPLER.NUM_WORKERS "$WORKERS" &
wait

for name in full half; do  # the same patch models, each window placed by the resized model
  python main.py --cfg "$OUT/$name/config.yaml" OUTPUT.OUTPUT_DIR "$OUT/${name}_coarse_to_fine" \
    TRAINER.INFERENCE_ONLY True MODEL.CHECKPOINT "$OUT/$name/model_best.model" \
    SAMPLER.PATCH.INFERENCE_MODE coarse_to_fine \
    SAMPLER.PATCH.COARSE_CHECKPOINT "$OUT/resized/model_best.model" \
    > "$OUT/${name}_coarse_to_fine.log" 2>&1
done
for log in "$OUT"/*.log; do  # each run's test summary and inference time
  echo "== $log"
  grep -A2 "on 20 test images" "$log" | tail -2 || true
  grep "images of testing" "$log" | tail -1 || true
done
