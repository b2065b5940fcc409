#!/bin/bash
# Slurm batch job: test trained models on one GPU.
#
#   sbatch --output=OUTPUT_DIR/slurm-%j.out scripts/scripts_bess/submit_inference.sh --cfg FILE [KEY VALUE ...]
#
# runs run_inference_config.sh. As the job that submit_folds.py makes wait for its training
# array (LANNU_FOLDS, LANNU_SEEDS, LANNU_ARRAY_DIR exported), it instead tests every fold's
# model (with several seeds: their ensemble) on the fold's testing list and writes the
# cross-validation summary to LANNU_ARRAY_DIR/cross_validation (scripts/array_summary.py).
#
#SBATCH --job-name=lannu-test
#SBATCH --partition=gpu
#SBATCH --qos=gpu
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --output=slurm-%x-%j.out
set -eo pipefail
# shellcheck source=scripts/scripts_bess/lannu_env.sh
source "${LANNU_DIR:-${SLURM_SUBMIT_DIR:-.}}/scripts/scripts_bess/lannu_env.sh"

if [[ -z ${LANNU_FOLDS:-} ]]; then
    exec bash "$LANNU_DIR/scripts/scripts_bess/run_inference_config.sh" "$@"
fi
load_environment
python "$LANNU_DIR/scripts/array_summary.py" --folds "$LANNU_FOLDS" --seeds "${LANNU_SEEDS:-}" \
    --output-dir "$LANNU_ARRAY_DIR" "$@"
