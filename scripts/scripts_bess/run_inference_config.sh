#!/bin/bash
# Test trained checkpoints with LaNNU-Net on a cluster node (TRAINER.INFERENCE_ONLY True): load
# the modules, activate the environment, run main.py.
#
#   bash scripts/scripts_bess/run_inference_config.sh --cfg FILE [KEY VALUE ...]
#
# Without MODEL.CHECKPOINT every checkpoint of the fold in OUTPUT.OUTPUT_DIR is tested; for an
# ensemble give INFERENCE.ENSEMBLE_INFERENCE True and INFERENCE.ENSEMBLE_CHECKPOINTS.
set -eo pipefail
# shellcheck source=scripts/scripts_bess/lannu_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/lannu_env.sh"

require_cfg_arguments "$@"
load_environment
python "$LANNU_DIR/main.py" "$@" TRAINER.INFERENCE_ONLY True
