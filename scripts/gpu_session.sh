#!/usr/bin/env bash
# The one script a session with a lent GPU runs: scripts/benchmark_gpu.py in full, its JSON, the
# training metrics and the log written to $OUT. It must end within 8 minutes (15 minutes of device
# time per session, machine start and transfers included): the benchmark gets BENCH_TIMEOUT
# seconds (default 450; --dry-run 1800).
#
#   1. here, once (copies the CIFAR-10 archive and the pure-Python packages the GPU image lacks,
#      hydra-core, omegaconf, antlr4, nir, nirtorch, into the git-ignored folder .gpu/):
#        bash scripts/gpu_session.sh --prepare
#   2. on the device, from the repository root, carrying that folder:
#        run(command="bash scripts/gpu_session.sh", carry=[".gpu"], timeout_s=540)
#      It first runs benchmark_gpu.py --smoke (tiny sizes on the GPU, ~1 minute, SMOKE_TIMEOUT
#      seconds at most) and the full benchmark only if that passed.
#   3. here, without a GPU: the same steps with benchmark_gpu.py --quick on the CPU
#        bash scripts/gpu_session.sh --dry-run
#
# Environment: PYTHON (default python3), OUT (default logs/gpu_session), GPU_DIR (default .gpu),
# BENCH_OUT (the benchmark's own folder, default logs/benchmark_gpu), BENCH_ARGS (extra
# benchmark_gpu.py arguments and train.py overrides, e.g. "--epochs 20"),
# NEUROCUDA_CIFAR10_ARCHIVE (default $GPU_DIR/cifar10-jpeg.tar.gz; for --prepare, the source).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
GPU_DIR=${GPU_DIR:-$ROOT/.gpu}
PACKAGES=(hydra omegaconf antlr4 nir nirtorch)

prepare() {
    local archive=${NEUROCUDA_CIFAR10_ARCHIVE:-$ROOT/../shared/datasets/cifar10-jpeg.tar.gz}
    [[ -f $archive ]] || { echo "No CIFAR-10 archive at $archive; set NEUROCUDA_CIFAR10_ARCHIVE." >&2; exit 1; }
    mkdir -p "$GPU_DIR/site"
    # copied beside, then renamed: an interrupted copy leaves no short archive where runs look
    cp "$archive" "$GPU_DIR/cifar10-jpeg.tar.gz.tmp"
    mv "$GPU_DIR/cifar10-jpeg.tar.gz.tmp" "$GPU_DIR/cifar10-jpeg.tar.gz"
    # Each package's folder and its distribution's .dist-info (nir sets nir.version from it).
    "$PYTHON" - "$GPU_DIR/site" "${PACKAGES[@]}" <<'PY'
import importlib, importlib.metadata as metadata, shutil, sys
from pathlib import Path
site, packages = Path(sys.argv[1]), sys.argv[2:]
owners = metadata.packages_distributions()
for package in packages:
    source = Path(importlib.import_module(package).__file__).parent
    shutil.rmtree(site / package, ignore_errors=True)
    shutil.copytree(source, site / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in owners[package]:
        record = next(f for f in metadata.distribution(name).files if f.name == "METADATA")
        info = record.locate().parent
        shutil.copytree(info, site / info.name, dirs_exist_ok=True)
PY
    du -sh "$GPU_DIR"
    echo "Prepared $GPU_DIR; run on the device with carry=[\".gpu\"] (under 64 MiB travels)."
}

run_benchmark() {
    local quick=$1
    OUT=${OUT:-$ROOT/logs/gpu_session}
    mkdir -p "$OUT"
    local imports
    imports=$(IFS=,; echo "${PACKAGES[*]}")
    if ! "$PYTHON" -c "import $imports" 2>/dev/null; then
        [[ -d $GPU_DIR/site ]] || { echo "Packages missing and no $GPU_DIR/site: run --prepare here first." >&2; exit 1; }
        export PYTHONPATH="$GPU_DIR/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=disabled
    export NEUROCUDA_CIFAR10_ARCHIVE=${NEUROCUDA_CIFAR10_ARCHIVE:-$GPU_DIR/cifar10-jpeg.tar.gz}
    local bench_out=${BENCH_OUT:-$ROOT/logs/benchmark_gpu}
    local args=(--out "$bench_out")
    [[ $quick == 1 ]] && args+=(--quick)
    local extra=()
    read -ra extra <<< "${BENCH_ARGS:-}"  # words, not globs: overrides may hold [4,8]
    args+=("${extra[@]}")
    {
        date -u
        command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
        "$PYTHON" -c "import sys, torch, lightning; print('python', sys.version.split()[0], 'torch', torch.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())"
        local status=0
        if [[ $quick == 0 ]]; then  # a fault only the GPU shows costs a minute, not the loan
            echo "preflight: benchmark_gpu.py --smoke (tiny sizes, this device, the same overrides)"
            timeout "${SMOKE_TIMEOUT:-240}" "$PYTHON" scripts/benchmark_gpu.py --smoke \
                --out "$bench_out/smoke" "${extra[@]}" || status=$?
            echo "preflight exit status $status"
            date -u
        fi
        if [[ $status == 0 ]]; then
            echo "benchmark_gpu.py ${args[*]}"
            timeout "${BENCH_TIMEOUT:-$((quick ? 1800 : 450))}" "$PYTHON" scripts/benchmark_gpu.py "${args[@]}" || status=$?
            echo "benchmark_gpu.py exit status $status"
        fi
        date -u
    } 2>&1 | tee "$OUT/gpu_session.log"
    for file in "$bench_out/benchmark_gpu.json" "$bench_out"/run/csv/version_*/metrics.csv \
        "$bench_out"/deploy/deploy_*.json; do
        [[ -f $file ]] && cp "$file" "$OUT/"
    done
    [[ -f $OUT/benchmark_gpu.json ]]
}

case ${1:-} in
    --prepare) prepare ;;
    --dry-run) run_benchmark 1 ;;
    "") run_benchmark 0 ;;
    *) echo "usage: bash scripts/gpu_session.sh [--prepare | --dry-run]" >&2; exit 2 ;;
esac
