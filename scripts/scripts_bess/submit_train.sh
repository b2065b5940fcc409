#!/bin/bash
# Slurm batch job: train one model on one GPU; requeued and resumed if the time limit comes first.
#
#   sbatch --output=OUTPUT_DIR/slurm-%j.out scripts/scripts_bess/submit_train.sh --cfg FILE [KEY VALUE ...]
#
# Submit from the repository root (or export LANNU_DIR). Five minutes before the time limit Slurm
# sends SIGUSR1 (--signal below); training stops after the step, keeps the latest completed
# epoch in model_latest, and this script requeues the job, which resumes from it
# (TRAINER.AUTO_RESUME True is always added).
#
# As a task of an array from submit_folds.py, which exports LANNU_FOLDS and LANNU_SEEDS (lists
# joined by ":") and LANNU_ARRAY_DIR: task i trains fold FOLDS[i / #SEEDS] with seed
# SEEDS[i % #SEEDS] into LANNU_ARRAY_DIR/fold<F>/seed<S> (without seeds: LANNU_ARRAY_DIR/fold<F>
# with SOLVER.SEED from the config).
#
#SBATCH --job-name=lannu-train
#SBATCH --partition=gpu
#SBATCH --qos=gpu
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --mem=32G
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -eo pipefail
# shellcheck source=scripts/scripts_bess/lannu_env.sh
source "${LANNU_DIR:-${SLURM_SUBMIT_DIR:-.}}/scripts/scripts_bess/lannu_env.sh"

task=()
if [[ -n ${LANNU_FOLDS:-} ]]; then
    IFS=: read -r -a folds <<<"$LANNU_FOLDS"
    IFS=: read -r -a seeds <<<"${LANNU_SEEDS:-}"
    index=${SLURM_ARRAY_TASK_ID:?LANNU_FOLDS is for array tasks}
    count=$((${#seeds[@]} > 0 ? ${#seeds[@]} : 1))
    fold=${folds[index / count]}
    folder="$LANNU_ARRAY_DIR/fold$fold"
    task=(TRAINER.FOLD "$fold" TRAINER.CROSS_VALIDATION False)
    if [[ ${#seeds[@]} -gt 0 ]]; then
        seed=${seeds[index % count]}
        folder="$folder/seed$seed"
        task+=(SOLVER.SEED "$seed")
    fi
    task+=(OUTPUT.OUTPUT_DIR "$folder")
    echo "array task $index: ${task[*]}"
fi

rc=0
run_forwarding_signals bash "$LANNU_DIR/scripts/scripts_bess/run_train_config.sh" \
    "$@" "${task[@]}" TRAINER.AUTO_RESUME True || rc=$?
requeue_if_preempted "$rc"
exit "$rc"
