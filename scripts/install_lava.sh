#!/usr/bin/env bash
# Install lava-nc 0.10.0 into its own venv (default .cache/lava-venv, git-ignored) for the Lava
# cross-check (tests/test_lava_crosscheck.py). Idempotent: a complete venv is left as it is.
#
# lava-nc 0.10.0 declares Requires-Python <3.11 but runs on 3.11 once two things are handled:
#   1. pip refuses it on 3.11, so its declared dependencies are installed first and lava-nc itself
#      with --no-deps --ignore-requires-python;
#   2. lava/magma/compiler/var_model.py uses dataclass instances as field defaults
#      (`x: ByteEncoder = ByteEncoder()`), which Python 3.11 rejects ("mutable default ... use
#      default_factory"). scripts/lava_var_model_fix.py rewrites them to field(default_factory=...).
# torch is deliberately not installed there: Lava then convolves with scipy (same integer results).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LAVA_VENV:-$ROOT/.cache/lava-venv}"
PYTHON="${LAVA_PYTHON:-python3}"
MARKER="$VENV/.neurocuda-lava-ok"

if [[ -f "$MARKER" ]]; then
    echo "Lava venv ready: $VENV"
    exit 0
fi

echo "Creating Lava venv in $VENV with $($PYTHON --version 2>&1)"
"$PYTHON" -m venv --clear "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input -q)
"${PIP[@]}" install "asteval>=0.9.31,<0.10.0" "networkx<=2.8.7" "numpy>=1.24.4,<2.0.0" \
    "scikit-learn>=1.5.0,<2.0.0" "scipy>=1.10.1,<2.0.0"
"${PIP[@]}" install --no-deps --ignore-requires-python "lava-nc==0.10.0"
"$VENV/bin/python" "$ROOT/scripts/lava_var_model_fix.py"
"$VENV/bin/python" -c "from lava.proc.lif.process import LIF; from lava.proc.dense.process import Dense; \
from lava.magma.core.run_configs import Loihi2SimCfg; print('lava import ok')"
touch "$MARKER"
echo "Lava venv ready: $VENV"
