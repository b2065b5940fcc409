#!/bin/bash
# Train with LaNNU-Net on a cluster node: load the modules, activate the environment, run main.py.
#
#   bash scripts/scripts_bess/run_train_config.sh --cfg FILE [KEY VALUE ...]
#
# LANNU_LAUNCHER (default: python) starts main.py; submit_train_multigpu.sh sets it to torchrun.
# Module and environment names are at the top of lannu_env.sh.
set -eo pipefail
# shellcheck source=scripts/scripts_bess/lannu_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/lannu_env.sh"

require_cfg_arguments "$@"
load_environment
read -r -a launcher <<<"${LANNU_LAUNCHER:-python}"
rc=0
run_forwarding_signals "${launcher[@]}" "$LANNU_DIR/main.py" "$@" || rc=$?
exit "$rc"
