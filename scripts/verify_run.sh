#!/usr/bin/env bash
# The full-test-set checks behind docs/results.md's fine-tuning rows, for one checkpoint of a run:
# its .nir file against the checkpoint on all 10,000 test images (scripts/verify_nir.py: accuracy,
# max abs diff, divergent images at each T), then the loihi2 deployment against the float SNN
# (scripts/benchmark_deploy.py, accuracy section).
#
#   bash scripts/verify_run.sh RUN_DIR CHECKPOINT_STEM [data.* overrides]   # e.g. logs/ft/cn_q8_s16_e20 epoch_019
#
# The checkpoint is RUN_DIR/checkpoints/finetune/STEM.ckpt (a fine-tuning run) or, failing that,
# RUN_DIR/checkpoints/STEM.ckpt (an ANN run, converted). Environment: PYTHON (default python3),
# VERIFY_T (default "4 8"), DEPLOY_T (default 8). The deployment's JSON: RUN_DIR/STEM_deploy.json.
set -euo pipefail
(( $# >= 2 )) || {
    echo "usage: bash scripts/verify_run.sh RUN_DIR CHECKPOINT_STEM [data.* overrides]" >&2
    exit 2
}
run_dir=$1 stem=$2
shift 2
PYTHON=${PYTHON:-python3}
dir=$run_dir/checkpoints/finetune
[[ -f $dir/$stem.ckpt ]] || dir=$run_dir/checkpoints
for suffix in ckpt nir; do
    [[ -f $dir/$stem.$suffix ]] || {
        echo "No $stem.$suffix under $run_dir/checkpoints{/finetune,}: pass a run directory and the" \
            "stem of a checkpoint that has a .nir beside it (e.g. epoch_019)." >&2
        exit 1
    }
done
scripts=$(dirname "$0")
# shellcheck disable=SC2086  # VERIFY_T / DEPLOY_T are lists of T
"$PYTHON" "$scripts/verify_nir.py" "$dir/$stem.nir" --checkpoint "$dir/$stem.ckpt" \
    --num-images 0 --timesteps ${VERIFY_T:-4 8} --batch-size 250 "$@"
# shellcheck disable=SC2086
"$PYTHON" "$scripts/benchmark_deploy.py" --nir "$dir/$stem.nir" --sections accuracy \
    --timesteps ${DEPLOY_T:-8} --out "$run_dir/${stem}_deploy.json" "$@"
