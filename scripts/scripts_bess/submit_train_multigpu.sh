#!/bin/bash
# Slurm batch job: train one model on all GPUs of one node with torchrun (DistributedDataParallel,
# NCCL); requeued and resumed like submit_train.sh.
#
#   sbatch --gres=gpu:4 --output=OUTPUT_DIR/slurm-%j.out \
#       scripts/scripts_bess/submit_train_multigpu.sh --cfg FILE [KEY VALUE ...]
#
# SOLVER.DATA_LOADER_BATCH_SIZE is the global batch, split evenly between the GPUs, so it must be
# divisible by their number; the run then trains the same model as one GPU with that batch.
#
#SBATCH --job-name=lannu-ddp
#SBATCH --partition=gpu
#SBATCH --qos=gpu
#SBATCH --nodes=1
#SBATCH --gres=gpu:2
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -eo pipefail
# shellcheck source=scripts/scripts_bess/lannu_env.sh
source "${LANNU_DIR:-${SLURM_SUBMIT_DIR:-.}}/scripts/scripts_bess/lannu_env.sh"

# One process per GPU that Slurm gave this job.
IFS=, read -r -a gpus <<<"${CUDA_VISIBLE_DEVICES:?no GPUs allocated: submit with --gres=gpu:N}"
export LANNU_LAUNCHER="torchrun --standalone --nproc_per_node ${#gpus[@]}"
echo "training on ${#gpus[@]} GPUs: $LANNU_LAUNCHER"

rc=0
run_forwarding_signals bash "$LANNU_DIR/scripts/scripts_bess/run_train_config.sh" \
    "$@" TRAINER.AUTO_RESUME True || rc=$?
requeue_if_preempted "$rc"
exit "$rc"
