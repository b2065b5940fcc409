#!/bin/bash
# Sourced by the other scripts here: the cluster's settings and the two helpers they share.
# Every setting can be overridden from the environment, e.g. CONDA_ENV=myenv sbatch ...

# Modules of the University of Sheffield's Bessemer cluster; change these for another cluster.
: "${ANACONDA_MODULE:=Anaconda3/2019.07}"
: "${CUDA_MODULE:=cuDNN/7.6.4.38-gcccuda-2019b}"
# The conda environment made from requirements/environment.yml.
: "${CONDA_ENV:=lannunet}"
# The LaNNU-Net checkout: the one this file is in. (Slurm runs a copy of a batch script from its
# spool folder, so the batch scripts find this file through LANNU_DIR or the submit folder.)
: "${LANNU_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export ANACONDA_MODULE CUDA_MODULE CONDA_ENV LANNU_DIR

# main.py's exit code when a stop signal interrupted training (trainer/preemption.py).
PREEMPTED_EXIT_CODE=75
LANNU_SIGNALLED=0

# Exit 2 with the usage line unless the arguments start with --cfg FILE.
require_cfg_arguments() {
    if [[ $1 != --cfg || -z $2 ]]; then
        echo "usage: $0 --cfg FILE [KEY VALUE ...]" >&2
        exit 2
    fi
}

# Load conda and CUDA and activate the environment. Where there is no `module` command (a
# workstation), say so and use the Python environment that is active.
load_environment() {
    if ! command -v module >/dev/null 2>&1; then
        echo "no 'module' command: using the active environment ($(command -v python))" >&2
        return
    fi
    module load "$ANACONDA_MODULE" "$CUDA_MODULE"
    # shellcheck disable=SC1091  # conda's activate script lives on the cluster
    source activate "$CONDA_ENV"
}

# Run "$@" in the background and pass SIGTERM or SIGUSR1 (what Slurm sends before the time
# limit) on to it as SIGTERM, which main.py and torchrun both handle: training stops after the
# step with the latest completed epoch saved. Returns the command's exit code.
run_forwarding_signals() {
    "$@" &
    local child=$!
    trap 'LANNU_SIGNALLED=1; kill -TERM "$child" 2>/dev/null || true' TERM USR1
    local rc=0
    while true; do
        rc=0
        wait "$child" || rc=$?
        # wait returns early (> 128) when a trapped signal arrives; wait again for the child.
        kill -0 "$child" 2>/dev/null || break
    done
    trap - TERM USR1
    return "$rc"
}

# Requeue this Slurm job when training stopped on a signal (exit code 75, or, under torchrun,
# which reports its own code, any failure after this script forwarded a stop signal). The
# requeued job runs with TRAINER.AUTO_RESUME True and resumes from model_latest.
requeue_if_preempted() {
    local rc=$1
    if [[ $rc -eq $PREEMPTED_EXIT_CODE || ($LANNU_SIGNALLED -eq 1 && $rc -ne 0) ]]; then
        echo "stopped before the time limit (exit code $rc): requeueing job $SLURM_JOB_ID"
        scontrol requeue "$SLURM_JOB_ID"
        exit 0
    fi
}
